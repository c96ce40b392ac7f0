/* SPDX-License-Identifier: GPL-2.0-only */
/* The <linux/hyperv.h> structs that are not packed, or whose packed outer
 * struct contains a naturally aligned union (hv_kvp_msg's body is 4-byte
 * aligned, which is where its 2 bytes of tail padding come from). */

struct hv_kvp_msg_get {
	struct hv_kvp_exchg_msg_value data;
};

struct hv_kvp_msg_set {
	struct hv_kvp_exchg_msg_value data;
};

struct hv_kvp_msg_delete {
	uint32_t key_size;
	uint8_t key[512];
};

struct hv_kvp_register {
	uint8_t version[512];
};

struct hv_kvp_msg {
	union {
		struct hv_kvp_hdr kvp_hdr;
		int error;
	};
	union {
		struct hv_kvp_msg_get kvp_get;
		struct hv_kvp_msg_set kvp_set;
		struct hv_kvp_msg_delete kvp_delete;
		struct hv_kvp_msg_enumerate kvp_enum_data;
		struct hv_kvp_ipaddr_value kvp_ip_val;
		struct hv_kvp_register kvp_register;
	} body;
};

struct hv_vss_msg {
	union {
		struct hv_vss_hdr vss_hdr;
		int error;
	};
	union {
		struct hv_vss_check_feature vss_cf;
		struct hv_vss_check_dm_info dm_info;
	};
};
