"""The rules Sluice ships, collected from their modules: stable ids, what
they mean, ATT&CK mapping, severity and typed settings. Each rule module
under sensor/detect/rules/ holds its own entry (INFO) and settings
(Settings); this module only lists them, in the order `sluice rules` shows.
Config keys under [rules.<id>] are checked against the settings' fields.
"""

from __future__ import annotations

from sensor.detect.rule import KIB, MIB, T1048, T1104, RuleInfo, RuleSettings
from sensor.detect.rules import (
    c2001_multistage_chain,
    c2002_beaconing,
    c2003_inter_container,
    c2004_lifecycle_burst,
    c2005_new_listener,
    c2006_inbound_outside,
    c2007_runtime_socket,
    c2008_kubernetes_api,
    c2009_container_spawn,
    eva001_sensor_flood,
    exf001_volume_spike,
    exf002_nonstandard_port,
    exf003_cleartext_carrier,
    exf004_new_destination,
    exf005_short_lived_container,
    exf006_encrypt_then_egress,
    fim001_orchestration_config,
)

RULES: tuple[RuleInfo, ...] = tuple(
    m.INFO
    for m in (
        exf001_volume_spike,
        exf002_nonstandard_port,
        exf003_cleartext_carrier,
        exf004_new_destination,
        exf005_short_lived_container,
        exf006_encrypt_then_egress,
        c2001_multistage_chain,
        c2002_beaconing,
        c2003_inter_container,
        c2004_lifecycle_burst,
        c2005_new_listener,
        c2006_inbound_outside,
        c2007_runtime_socket,
        c2008_kubernetes_api,
        c2009_container_spawn,
        eva001_sensor_flood,
        fim001_orchestration_config,
    )
)

BY_ID: dict[str, RuleInfo] = {r.id: r for r in RULES}

__all__ = ["BY_ID", "KIB", "MIB", "RULES", "T1048", "T1104", "RuleInfo", "RuleSettings"]
