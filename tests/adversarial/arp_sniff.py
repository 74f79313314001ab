"""Counts the ARP requests that reach a network namespace: run inside the
sink netns (`ip netns exec NS python3 arp_sniff.py OUT`), it appends one line
"<unix time> <target IPv4>" to OUT per ARP request seen on any interface,
until killed. The raw-socket test uses it to tell whether a frame a
container sent through an AF_PACKET socket left the container.

(A standard-library AF_PACKET socket: tcpdump is not installed on the test
hosts, and a sniffer needs nothing more.)"""

from __future__ import annotations

import socket
import sys
import time

ETH_P_ARP = 0x0806
ARP_REQUEST = 1


def main(out: str) -> None:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    with open(out, "a", buffering=1) as f:
        f.write("ready\n")
        while True:
            frame, addr = s.recvfrom(2048)
            # only frames coming in (not the sink's own replies), one copy
            # each: the bridge port and the bridge both see it
            if addr[2] == socket.PACKET_OUTGOING or addr[0] != "br0":
                continue
            arp = frame[14:]
            if len(arp) >= 28 and int.from_bytes(arp[6:8], "big") == ARP_REQUEST:
                f.write(f"{time.time():.3f} {socket.inet_ntoa(arp[24:28])}\n")


if __name__ == "__main__":
    main(sys.argv[1])
