# SPDX-License-Identifier: GPL-2.0-only
"""The Hyper-V devices as Linux names them: VMBus classes and the drivers that bind them.

The class GUIDs are those of include/linux/hyperv.h (HV_*_GUID) that
drivers/hv/hv_util.c binds (util_id_table), written as sysfs prints a
device's class_id, lower case without braces.  Shared by the file-copy
daemon (finding its device), hvctl (every service) and the simulator.
"""

from __future__ import annotations

HEARTBEAT_CLASS_ID = "57164f39-9115-4e78-ab55-382f3bd5422d"
SHUTDOWN_CLASS_ID = "0e0b6031-5213-4934-818b-38d90ced39db"
TIMESYNC_CLASS_ID = "9527e630-d0ae-497b-adce-e80ab0175caf"
KVP_CLASS_ID = "a9a0f4e7-5a45-4d96-b827-8a841e8c03e6"
VSS_CLASS_ID = "35fa2e29-ea23-4236-96ae-3a6ebacba440"
FCOPY_CLASS_ID = "34d14be3-dee4-41c8-9ae7-6b174977c192"
# The instance Hyper-V offers for file copy: only a fallback, the class decides.
FCOPY_INSTANCE_ID = "eb765408-105f-49b6-b4aa-c123b64d17d4"

# Owns the utility channels and their /dev/vmbus/hv_* devices (file copy: up to 6.9).
HV_UTILS_DRIVER = "hv_utils"
# Hands the file-copy channel to user space (kernels from 6.10).
UIO_DRIVER = "uio_hv_generic"
