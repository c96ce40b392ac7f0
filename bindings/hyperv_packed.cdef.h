/* SPDX-License-Identifier: GPL-2.0-only */
/* The structs <linux/hyperv.h> declares __attribute__((packed)), declared in
 * full (cdef packed=True) so cffi checks every size and offset against the
 * compiler when the type is first used. */

struct hv_vss_hdr {
	uint8_t operation;
	uint8_t reserved[7];
};

struct hv_vss_check_feature {
	uint32_t flags;
};

struct hv_vss_check_dm_info {
	uint32_t flags;
};

struct hv_fcopy_hdr {
	uint32_t operation;
	uint8_t service_id0[16];
	uint8_t service_id1[16];
};

struct hv_start_fcopy {
	struct hv_fcopy_hdr hdr;
	uint16_t file_name[260];
	uint16_t path_name[260];
	uint32_t copy_flags;
	uint64_t file_size;
};

struct hv_do_fcopy {
	struct hv_fcopy_hdr hdr;
	uint32_t pad;
	uint64_t offset;
	uint32_t size;
	uint8_t data[6144];
};

struct hv_kvp_ipaddr_value {
	uint16_t adapter_id[128];
	uint8_t addr_family;
	uint8_t dhcp_enabled;
	uint16_t ip_addr[1024];
	uint16_t sub_net[1024];
	uint16_t gate_way[512];
	uint16_t dns_addr[1024];
};

struct hv_kvp_hdr {
	uint8_t operation;
	uint8_t pool;
	uint16_t pad;
};

struct hv_kvp_exchg_msg_value {
	uint32_t value_type;
	uint32_t key_size;
	uint32_t value_size;
	uint8_t key[512];
	union {
		uint8_t value[2048];
		uint32_t value_u32;
		uint64_t value_u64;
	};
};

struct hv_kvp_msg_enumerate {
	uint32_t index;
	struct hv_kvp_exchg_msg_value data;
};

struct hv_kvp_ip_msg {
	uint8_t operation;
	uint8_t pool;
	struct hv_kvp_ipaddr_value kvp_ip_val;
};
