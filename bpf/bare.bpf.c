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

/* Words of the process's own stack read per hit (at most 3). watch reads
 * the process's memory three times an operation (the map's header, the
 * return address, the key); this prices such reads at their cheapest, on
 * memory the process has just touched: the floor of any probe that reads
 * as much, to set watch's cost beside. */
const volatile u32 user_reads = 0;

SEC("uprobe.multi")
int count_hit(struct pt_regs *ctx)
{
	u32 zero = 0;
	u64 *c = bpf_map_lookup_elem(&hits, &zero);
	u64 word;

	if (c)
		*c += 1;
	for (u32 i = 0; i < 3; i++) {
		if (i >= user_reads)
			break;
		bpf_probe_read_user(&word, sizeof(word), (void *)(GO_SP(ctx) + 8 * i));
	}
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
