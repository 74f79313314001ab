"""The rules, one module per rule: its class, its helpers, its state.

Each module holds its catalog entry (INFO) and typed settings (Settings).
The engine iterates over all_rules(); a new rule is a new module here and
a line in sensor/detect/catalog.py (see CONTRIBUTING.md).
"""

from __future__ import annotations

from sensor.detect.rule import Rule
from sensor.detect.rules.c2001_multistage_chain import MultiStageChain
from sensor.detect.rules.c2002_beaconing import Beaconing
from sensor.detect.rules.c2003_inter_container import InterContainer
from sensor.detect.rules.c2004_lifecycle_burst import LifecycleBurst
from sensor.detect.rules.c2005_new_listener import NewListener
from sensor.detect.rules.c2006_inbound_outside import InboundFromOutside
from sensor.detect.rules.c2007_runtime_socket import RuntimeSocket
from sensor.detect.rules.c2008_kubernetes_api import KubernetesApi
from sensor.detect.rules.c2009_container_spawn import ContainerSpawn
from sensor.detect.rules.eva001_sensor_flood import SensorFlood
from sensor.detect.rules.exf001_volume_spike import VolumeSpike
from sensor.detect.rules.exf002_nonstandard_port import NonStandardPort
from sensor.detect.rules.exf003_cleartext_carrier import CleartextCarrier
from sensor.detect.rules.exf004_new_destination import NewDestination
from sensor.detect.rules.exf005_short_lived_container import ShortLivedContainer
from sensor.detect.rules.exf006_encrypt_then_egress import EncryptThenEgress


def all_rules() -> list[Rule]:
    return [
        VolumeSpike(),
        NonStandardPort(),
        CleartextCarrier(),
        NewDestination(),
        ShortLivedContainer(),
        EncryptThenEgress(),
        MultiStageChain(),
        Beaconing(),
        InterContainer(),
        LifecycleBurst(),
        NewListener(),
        InboundFromOutside(),
        RuntimeSocket(),
        KubernetesApi(),
        ContainerSpawn(),
        SensorFlood(),
    ]


__all__ = [
    "VolumeSpike",
    "NonStandardPort",
    "CleartextCarrier",
    "NewDestination",
    "ShortLivedContainer",
    "EncryptThenEgress",
    "MultiStageChain",
    "Beaconing",
    "InterContainer",
    "LifecycleBurst",
    "NewListener",
    "InboundFromOutside",
    "RuntimeSocket",
    "KubernetesApi",
    "ContainerSpawn",
    "SensorFlood",
    "all_rules",
]
