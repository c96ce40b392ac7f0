/* SPDX-License-Identifier: GPL-2.0-only */
/* The rtnetlink messages the KVP daemon reads (hvdaemons/kvp/netlink.py), as
 * <linux/netlink.h>, <linux/rtnetlink.h>, <linux/if_addr.h> and <linux/if.h>
 * declare them.  Declared here for the layout check only: cffi compares each
 * struct with the compiler's, and tests/test_abi.py holds netlink.py's
 * struct formats to it; the numbers are the headers' own. */

struct nlmsghdr {
	uint32_t nlmsg_len;
	uint16_t nlmsg_type;
	uint16_t nlmsg_flags;
	uint32_t nlmsg_seq;
	uint32_t nlmsg_pid;
};

struct rtattr {
	unsigned short rta_len;
	unsigned short rta_type;
};

struct ifinfomsg {
	unsigned char ifi_family;
	unsigned char __ifi_pad;
	unsigned short ifi_type;
	int ifi_index;
	unsigned ifi_flags;
	unsigned ifi_change;
};

struct ifaddrmsg {
	uint8_t ifa_family;
	uint8_t ifa_prefixlen;
	uint8_t ifa_flags;
	uint8_t ifa_scope;
	uint32_t ifa_index;
};

struct rtmsg {
	unsigned char rtm_family;
	unsigned char rtm_dst_len;
	unsigned char rtm_src_len;
	unsigned char rtm_tos;
	unsigned char rtm_table;
	unsigned char rtm_protocol;
	unsigned char rtm_scope;
	unsigned char rtm_type;
	unsigned rtm_flags;
};

struct rtnexthop {
	unsigned short rtnh_len;
	unsigned char rtnh_flags;
	unsigned char rtnh_hops;
	int rtnh_ifindex;
};

static const int NLMSG_NOOP;
static const int NLMSG_ERROR;
static const int NLMSG_DONE;
static const int NLMSG_OVERRUN;
static const int NLM_F_REQUEST;
static const int NLM_F_MULTI;
static const int NLM_F_DUMP_INTR;
static const int NLM_F_DUMP;
static const int NLA_F_NESTED;
static const int NLA_F_NET_BYTEORDER;
static const int RTM_NEWLINK;
static const int RTM_GETLINK;
static const int RTM_NEWADDR;
static const int RTM_GETADDR;
static const int RTM_NEWROUTE;
static const int RTM_GETROUTE;
static const int IFLA_ADDRESS;
static const int IFLA_IFNAME;
static const int IFA_ADDRESS;
static const int IFA_LOCAL;
static const int IFA_FLAGS;
static const int RTA_DST;
static const int RTA_OIF;
static const int RTA_GATEWAY;
static const int RTA_PRIORITY;
static const int RTA_MULTIPATH;
static const int RTA_TABLE;
static const int RTA_VIA;
static const int RT_TABLE_MAIN;
static const int RTN_UNICAST;
static const int IFF_UP;
static const int IFF_LOOPBACK;
