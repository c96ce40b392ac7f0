/* SPDX-License-Identifier: GPL-2.0-only */
/* The VMBus packet descriptor and the IC message headers as
 * include/linux/hyperv.h declares them (struct vmpacket_descriptor,
 * vmbuspipe_hdr, ic_version, icmsg_hdr).  They are kernel internals, absent
 * from the UAPI <linux/hyperv.h> (tools/hv/vmbus_bufring.h copies them too),
 * so both ends of the ring -- the daemons' ring.c and the simulated host's
 * hvsim/host.c -- take their offsets from these, through the compiler.
 * Not a cdef: Python gets the layouts through protocol/icmsg.py. */
#ifndef HVD_VMBUS_H
#define HVD_VMBUS_H

#include <stdint.h>

struct vmpacket_descriptor {
	uint16_t type;
	uint16_t offset8;
	uint16_t len8;
	uint16_t flags;
	uint64_t trans_id;
} __attribute__((packed));

struct vmbuspipe_hdr {
	uint32_t flags;
	uint32_t msgsize;
} __attribute__((packed));

struct ic_version {
	uint16_t major;
	uint16_t minor;
} __attribute__((packed));

struct icmsg_hdr {
	struct ic_version icverframe;
	uint16_t icmsgtype;
	struct ic_version icvermsg;
	uint16_t icmsgsize;
	uint32_t status;
	uint8_t ictransaction_id;
	uint8_t icflags;
	uint8_t reserved[2];
} __attribute__((packed));

#define VM_PKT_DATA_INBAND 6
#define VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED 1
#define ICMSGTYPE_FCOPY 7
#define ICMSGHDRFLAG_TRANSACTION 1
#define ICMSGHDRFLAG_RESPONSE 4

#endif
