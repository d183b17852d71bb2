//! Sizing PostgreSQL to the container it runs in.

/// The memory this server may use: the cgroup limit (v2, then v1) of its container, else the
/// machine's memory.
pub fn memory_limit() -> u64 {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|v| v.trim().parse::<u64>().ok());
    let machine = read("/proc/meminfo").and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    match (cgroup, machine) {
        (Some(c), Some(m)) => c.min(m),
        (Some(v), None) | (None, Some(v)) => v,
        (None, None) => 2 << 30,
    }
}

/// The `max_connections` PostgreSQL runs with: `configured`, else sized to this container's
/// memory ([`connections_for_memory`]).
pub fn max_connections(configured: Option<u32>) -> u32 {
    configured.unwrap_or_else(|| connections_for_memory(memory_limit()))
}

/// `max_connections` for `memory` bytes: three quarters of it for backends after 128 MiB of
/// shared buffers, 10 MiB each (a catalog backend with DuckLake's queries and `work_mem` of
/// 8 MB), between 25 (three DuckDB clients) and 800.
pub fn connections_for_memory(memory: u64) -> u32 {
    const MIB: u64 = 1 << 20;
    let budget = (memory / 4 * 3).saturating_sub(128 * MIB);
    u32::try_from(budget / (10 * MIB))
        .unwrap_or(u32::MAX)
        .clamp(25, 800)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_follow_the_container_memory() {
        const GIB: u64 = 1 << 30;
        // Fargate's smallest task for a catalog (0.5 GiB) still takes three clients.
        assert_eq!(connections_for_memory(GIB / 2), 25);
        assert_eq!(connections_for_memory(2 * GIB), 140);
        assert_eq!(connections_for_memory(8 * GIB), 601);
        assert_eq!(connections_for_memory(64 * GIB), 800);
        assert!(memory_limit() > 0);
    }
}
