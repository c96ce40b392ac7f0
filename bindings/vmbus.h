/* SPDX-License-Identifier: GPL-2.0-only */
/* The kernel-internal VMBus layouts of vmbus.cdef.h for the C files of both
 * ends of a ring -- the daemons' ring.c and the simulated host's
 * hvsim/host.c -- packed as include/linux/hyperv.h declares them, and the
 * offsets and sizes those files use, all from the compiler. */
#ifndef HVD_VMBUS_H
#define HVD_VMBUS_H

#include <stddef.h>
#include <stdint.h>

#pragma pack(push, 1)
#include "vmbus.cdef.h"
#pragma pack(pop)

/* Byte offsets of the ring header fields. */
#define HVR_WRITE_INDEX ((uint32_t)offsetof(struct hv_ring_header, write_index))
#define HVR_READ_INDEX ((uint32_t)offsetof(struct hv_ring_header, read_index))
#define HVR_INTERRUPT_MASK ((uint32_t)offsetof(struct hv_ring_header, interrupt_mask))
#define HVR_PENDING_SEND_SZ ((uint32_t)offsetof(struct hv_ring_header, pending_send_sz))
#define HVR_FEATURE_BITS ((uint32_t)offsetof(struct hv_ring_header, feature_bits))

/* A packet: its descriptor, then the payload padded to 8 bytes, then a
 * trailer of this many bytes (the producer's write index before the packet,
 * shifted up 32 bits: the kernel's prev_indices). */
#define HVR_DESC_SIZE ((uint32_t)sizeof(struct vmpacket_descriptor))
#define HVR_TRAILER_SIZE ((uint32_t)sizeof(uint64_t))

_Static_assert(HVR_DESC_SIZE % 8 == 0, "a packet's payload starts 8-byte aligned");
_Static_assert(sizeof(struct hv_ring_header) <= HV_HYP_PAGE_SIZE, "the shared header fits its page");

#endif
