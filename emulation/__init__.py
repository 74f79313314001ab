"""Adversary emulation: a lab of containers and a sink "internet" in network
namespaces on this node, and scenarios that prove what the sensor catches.
Nothing leaves the machine: the sink lives in 198.18.0.0/16 inside a netns.
"""
