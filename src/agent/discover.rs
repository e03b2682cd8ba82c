//! Finding target processes on this host: by pid, or by the container id a
//! pod's status names (`containerd://ID`, `cri-o://ID`, `docker://ID`).

use std::path::{Path, PathBuf};

/// The bare id from a pod status `containerID`, or the id itself.
pub fn normalize_container_id(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, rest)| rest)
}

/// True when a `/proc/PID/cgroup` text places the process in that container.
///
/// Runtimes name the leaf cgroup after the id in a few layouts, all matched
/// on a whole path component so that one id never matches a longer one:
/// - cgroupfs: `/kubepods/burstable/pod<uid>/<id>`
/// - systemd (containerd, CRI-O, docker): `.../cri-containerd-<id>.scope`,
///   `.../crio-<id>.scope`, `.../docker-<id>.scope`
/// - cgroup v1 lists one line per hierarchy; any of them may carry the id.
pub fn cgroup_names_container(cgroup_text: &str, id: &str) -> bool {
    if id.is_empty() {
        return false;
    }
    cgroup_text.lines().any(|line| {
        // hierarchy-ID:controller-list:cgroup-path; the path may hold ':'.
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        path.split('/').any(|component| component_is(component, id))
    })
}

fn component_is(component: &str, id: &str) -> bool {
    let stem = component.strip_suffix(".scope").unwrap_or(component);
    if stem == id {
        return true;
    }
    // "<runtime>-<id>" where the prefix is the runtime's own name.
    stem.strip_suffix(id)
        .and_then(|prefix| prefix.strip_suffix('-'))
        .is_some_and(|runtime| {
            !runtime.is_empty()
                && runtime
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// All live pids on this host (from `proc_root`, normally `/proc`).
pub fn all_pids(proc_root: &Path) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids
}

/// Pids of processes (thread-group leaders) whose cgroup names the container.
pub fn pids_in_container(proc_root: &Path, id: &str) -> Vec<u32> {
    let id = normalize_container_id(id);
    all_pids(proc_root)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup"))
                .is_ok_and(|text| cgroup_names_container(&text, id))
        })
        .collect()
}

pub fn pid_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The executable of a process as seen from the host: `/proc/PID/root` joined
/// with the path the process sees, so binaries inside containers are read
/// from their own filesystem. Falls back to `/proc/PID/exe`, which still works
/// when the file was replaced or deleted after the process started.
pub fn exe_path(pid: u32) -> std::io::Result<(PathBuf, String)> {
    let link = std::fs::read_link(format!("/proc/{pid}/exe"))?;
    let shown = link.to_string_lossy().into_owned();
    let via_root =
        Path::new(&format!("/proc/{pid}/root")).join(link.strip_prefix("/").unwrap_or(&link));
    if !shown.ends_with(" (deleted)") && via_root.is_file() {
        return Ok((via_root, shown));
    }
    Ok((PathBuf::from(format!("/proc/{pid}/exe")), shown))
}

/// The load bias of the mapping of `exe_file_offset`..: runtime address minus
/// link address, read from `/proc/PID/maps` (0 for non-PIE binaries).
/// Where /proc/PID/exe points now (None once the process is gone).
pub fn exe_link(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

pub fn load_bias(pid: u32, exe_shown: &str, seg_vaddr: u64, seg_offset: u64) -> Option<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    bias_from_maps(&maps, exe_shown, seg_vaddr, seg_offset)
}

fn bias_from_maps(maps: &str, exe: &str, seg_vaddr: u64, seg_offset: u64) -> Option<u64> {
    for line in maps.lines() {
        // start-end perms offset dev inode path
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms), Some(offset)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let path = f.nth(2).unwrap_or("");
        if !perms.contains('x') || path != exe.trim_end_matches(" (deleted)") {
            continue;
        }
        let start = u64::from_str_radix(range.split('-').next()?, 16).ok()?;
        let offset = u64::from_str_radix(offset, 16).ok()?;
        // The mapping at `start` holds file offset `offset`, which the
        // binary links at seg_vaddr + (offset - seg_offset).
        let link = seg_vaddr.wrapping_add(offset).wrapping_sub(seg_offset);
        return Some(start.wrapping_sub(link));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1b6a2c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";

    #[test]
    fn container_ids_lose_their_runtime_prefix() {
        assert_eq!(normalize_container_id(&format!("containerd://{ID}")), ID);
        assert_eq!(normalize_container_id(&format!("cri-o://{ID}")), ID);
        assert_eq!(normalize_container_id(ID), ID);
    }

    #[test]
    fn every_runtime_layout_is_recognised() {
        let layouts = [
            // cgroup v2, systemd driver, containerd
            format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{ID}.scope\n"),
            // cgroup v2, systemd driver, CRI-O
            format!("0::/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope\n"),
            // cgroup v2, docker
            format!("0::/system.slice/docker-{ID}.scope\n"),
            // cgroup v2, cgroupfs driver
            format!("0::/kubepods/besteffort/pod0d3c/{ID}\n"),
            // cgroup v1, cgroupfs driver, several hierarchies
            format!("12:pids:/kubepods/burstable/pod7/{ID}\n11:memory:/kubepods/burstable/pod7/{ID}\n1:name=systemd:/kubepods/burstable/pod7/{ID}\n"),
            // cgroup v1, systemd driver
            format!("4:cpu,cpuacct:/kubepods.slice/kubepods-pod7.slice/cri-containerd-{ID}.scope\n"),
            // docker cgroup v1
            format!("9:devices:/docker/{ID}\n"),
        ];
        for text in &layouts {
            assert!(cgroup_names_container(text, ID), "not matched: {text}");
        }
    }

    #[test]
    fn ids_match_whole_components_only() {
        let other = format!("0::/kubepods/pod1/{ID}ff\n");
        assert!(!cgroup_names_container(&other, ID));
        let prefix = format!("0::/kubepods/pod1/{}\n", &ID[..12]);
        assert!(!cgroup_names_container(&prefix, ID));
        assert!(!cgroup_names_container("0::/\n", ""));
        assert!(!cgroup_names_container(&format!("0::/x/-{ID}.scope\n"), ID));
    }

    #[test]
    fn bias_comes_from_the_executable_mapping() {
        let maps = "\
55d0c8a00000-55d0c8a99000 r-xp 00000000 fd:01 1234 /app/server
55d0c8a9a000-55d0c8aeb000 r--p 0009a000 fd:01 1234 /app/server
7ffd1000-7ffd2000 r-xp 00000000 00:00 0 [vdso]
";
        // A PIE linked at 0x400000 (Go's internal linker does that).
        assert_eq!(
            bias_from_maps(maps, "/app/server", 0x400000, 0),
            Some(0x55d0c8a00000 - 0x400000)
        );
        // Non-PIE: mapped where it is linked.
        let maps = "00400000-00499000 r-xp 00000000 fd:01 1 /bin/x\n";
        assert_eq!(bias_from_maps(maps, "/bin/x", 0x400000, 0), Some(0));
        assert_eq!(bias_from_maps(maps, "/bin/y", 0x400000, 0), None);
    }
}
