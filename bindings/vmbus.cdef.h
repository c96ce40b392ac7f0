/* SPDX-License-Identifier: GPL-2.0-only */
/* The VMBus ring header, the packet descriptor, the IC message headers and
 * their numbers as include/linux/hyperv.h declares them.  They are kernel
 * internals, absent from the UAPI <linux/hyperv.h> (tools/hv/vmbus_bufring.h
 * copies them too), so they are declared here, once:
 *
 * - cffi reads this file as a cdef of hvdaemons._hv (every field is naturally
 *   aligned, so the layout is the same packed or not), and Python takes the
 *   sizes, offsets and numbers from the compiler through _ffi;
 * - the C files include it packed, through vmbus.h, and take their offsets
 *   with offsetof().
 *
 * Plain declarations only: no include guard, no attributes, no expressions
 * (cffi parses this file). */

/* The start of each ring's header page (struct hv_ring_buffer, up to
 * feature_bits; the rest of the page is padding).  The indices are byte
 * offsets into the data area that follows the header page. */
struct hv_ring_header {
	uint32_t write_index;
	uint32_t read_index;
	uint32_t interrupt_mask;
	uint32_t pending_send_sz;
	uint32_t reserved1[12];
	uint32_t feature_bits; /* bit 0: feat_pending_send_sz */
};

struct vmpacket_descriptor {
	uint16_t type;
	uint16_t offset8;
	uint16_t len8;
	uint16_t flags;
	uint64_t trans_id;
};

struct vmbuspipe_hdr {
	uint32_t flags;
	uint32_t msgsize;
};

struct ic_version {
	uint16_t major;
	uint16_t minor;
};

struct icmsg_hdr {
	struct ic_version icverframe;
	uint16_t icmsgtype;
	struct ic_version icvermsg;
	uint16_t icmsgsize;
	uint32_t status;
	uint8_t ictransaction_id;
	uint8_t icflags;
	uint8_t reserved[2];
};

/* The body of an ICMSGTYPE_NEGOTIATE message: the two counts, then the
 * framework versions and the service versions offered. */
struct icmsg_negotiate {
	uint16_t icframe_vercnt;
	uint16_t icmsg_vercnt;
	uint32_t reserved;
	struct ic_version icversion_data[];
};

/* The page the host knows (HV_HYP_PAGE_SIZE): only the first this many bytes
 * of a ring's header page are shared with it, whatever the guest's page size. */
#define HV_HYP_PAGE_SIZE 4096

/* vmpacket_descriptor.type and .flags */
#define VM_PKT_DATA_INBAND 6
#define VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED 1

/* icmsg_hdr.icmsgtype */
#define ICMSGTYPE_NEGOTIATE 0
#define ICMSGTYPE_HEARTBEAT 1
#define ICMSGTYPE_FCOPY 7

/* icmsg_hdr.icflags */
#define ICMSGHDRFLAG_TRANSACTION 1
#define ICMSGHDRFLAG_REQUEST 2
#define ICMSGHDRFLAG_RESPONSE 4
