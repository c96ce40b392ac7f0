# SPDX-License-Identifier: GPL-2.0-only
"""Network configuration for SET_IP_INFO, one module per backend.

model turns the host's request into a validated IpConfig; each backend
module (ifcfg, keyfile, networkd, netplan, ifupdown) renders it in its
system's syntax and says whether that system is present; detect picks the
one hv_set_ifconfig installs.  Modelled on cloud-init's
cloudinit/net/renderer.py and renderers.py.
"""
