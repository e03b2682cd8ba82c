// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The physical limit, for benches/overhead.sh: a uprobe that only counts,
 * on the same instructions mapguard probes. Whatever mapguard costs above
 * this is its own work; below it nothing can go. */
#include "regs.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} hits SEC(".maps");

SEC("uprobe.multi")
int count_hit(struct pt_regs *ctx)
{
	u32 zero = 0;
	u64 *c = bpf_map_lookup_elem(&hits, &zero);

	if (c)
		*c += 1;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
