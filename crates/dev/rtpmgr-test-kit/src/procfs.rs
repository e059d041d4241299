// SPDX-License-Identifier: MIT
//! What the benchmarks, soak and tests read from /proc: CPU time of a
//! process and of the CPUs, and the drop counters of UDP sockets.

use std::io;

/// utime + stime, in clock ticks, from the text of `/proc/<pid>/stat`.
/// The command name (field 2) is in parentheses and may hold spaces and
/// parentheses itself, so fields are counted from the last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: state (field 3) is index 0, utime (14) index 11,
    // stime (15) index 12.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`_SC_CLK_TCK`), the unit of /proc/<pid>/stat.
pub fn clock_ticks_per_s() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// CPU time (user + system, all threads) a process has used so far.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_stat_cpu_ticks(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}/stat: no utime/stime")))?;
    Ok(ticks as f64 / clock_ticks_per_s() as f64)
}

/// Datagrams dropped so far by the IPv4 UDP sockets bound to local `port`
/// (the last column of `/proc/net/udp`: socket buffer full), summed; `None`
/// when no socket has that port.
pub fn parse_udp_drops(table: &str, port: u16) -> Option<u64> {
    let mut found = None;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 13 {
            continue;
        }
        let Some((_, p)) = f[1].split_once(':') else { continue };
        if u16::from_str_radix(p, 16) != Ok(port) {
            continue;
        }
        if let Ok(d) = f[12].parse::<u64>() {
            found = Some(found.unwrap_or(0) + d);
        }
    }
    found
}

/// Datagrams dropped so far by the IPv4 UDP sockets bound to any local
/// port in `ports`, summed, in one pass over the table (the guest's
/// benchmark has a thousand sockets); `(sockets seen, drops)`.
pub fn parse_udp_drops_in(table: &str, ports: std::ops::RangeInclusive<u16>) -> (usize, u64) {
    let (mut sockets, mut drops) = (0, 0);
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 13 {
            continue;
        }
        let Some((_, p)) = f[1].split_once(':') else { continue };
        let Ok(p) = u16::from_str_radix(p, 16) else { continue };
        if !ports.contains(&p) {
            continue;
        }
        sockets += 1;
        drops += f[12].parse::<u64>().unwrap_or(0);
    }
    (sockets, drops)
}

/// [`parse_udp_drops`] of this host's `/proc/net/udp`.
pub fn udp_drops(port: u16) -> io::Result<Option<u64>> {
    Ok(parse_udp_drops(&std::fs::read_to_string("/proc/net/udp")?, port))
}

/// Busy time of CPU `cpu` so far, in clock ticks, from the text of
/// `/proc/stat`: user + nice + system + irq + softirq + steal (steal: time
/// a hypervisor gave the virtual CPU to someone else). Idle and iowait are
/// not busy; guest time is already inside user.
pub fn parse_cpu_busy_ticks(stat: &str, cpu: usize) -> Option<u64> {
    let name = format!("cpu{cpu}");
    let line = stat.lines().find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).map(|x| x.parse().ok()).collect::<Option<_>>()?;
    if v.len() < 8 {
        return None;
    }
    Some(v[0] + v[1] + v[2] + v[5] + v[6] + v[7])
}

/// [`parse_cpu_busy_ticks`] of this host, in seconds.
pub fn cpu_busy_seconds(cpu: usize) -> io::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let ticks = parse_cpu_busy_ticks(&stat, cpu)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("/proc/stat: no line for cpu{cpu}")))?;
    Ok(ticks as f64 / clock_ticks_per_s() as f64)
}

/// Busy and total clock ticks of all CPUs together, from the first line of
/// the text of `/proc/stat` (idle and iowait are not busy).
pub fn parse_all_cpus_ticks(stat: &str) -> (u64, u64) {
    let f: Vec<u64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// [`parse_all_cpus_ticks`] of this host now; (0, 0) if /proc/stat cannot
/// be read.
pub fn all_cpus_ticks() -> (u64, u64) {
    parse_all_cpus_ticks(&std::fs::read_to_string("/proc/stat").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_odd_names() {
        // Field 14 utime = 1234, 15 stime = 567.
        let tail = "S 1 2 3 4 5 6 7 8 9 10 1234 567 0 0 20 0 4 0 100 200 300";
        assert_eq!(parse_stat_cpu_ticks(&format!("4242 (rtpmgrd) {tail}")), Some(1801));
        // A name with spaces and a ')' inside must not shift the fields.
        assert_eq!(parse_stat_cpu_ticks(&format!("7 (a b) c)) {tail}")), Some(1801));
        assert_eq!(parse_stat_cpu_ticks("7 (x) S 1 2"), None);
        assert_eq!(parse_stat_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn own_cpu_time_is_readable() {
        let s = cpu_seconds(std::process::id()).unwrap();
        assert!((0.0..1e6).contains(&s));
    }

    const UDP: &str = "\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  101: 0100007F:A1B2 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1001 2 0000000000000000 17
  102: 00000000:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1002 2 0000000000000000 0
  103: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1003 2 0000000000000000 5
";

    #[test]
    fn udp_drops_by_port() {
        assert_eq!(parse_udp_drops(UDP, 0xa1b2), Some(17));
        // Two sockets on port 8080 (0x1f90): summed.
        assert_eq!(parse_udp_drops(UDP, 8080), Some(5));
        assert_eq!(parse_udp_drops(UDP, 9), None);
        assert_eq!(parse_udp_drops("header only\n", 8080), None);
    }

    #[test]
    fn udp_drops_over_a_port_range() {
        // 0xa1b2 = 41394, 0x1f90 = 8080 (two sockets).
        assert_eq!(parse_udp_drops_in(UDP, 8080..=8080), (2, 5));
        assert_eq!(parse_udp_drops_in(UDP, 8000..=41394), (3, 22));
        assert_eq!(parse_udp_drops_in(UDP, 8081..=41393), (0, 0));
    }

    #[test]
    fn cpu_busy_from_proc_stat() {
        let stat = "cpu  10 20 30 40 50 60 70 80 90 100\n\
                    cpu0 1 2 3 4000 5 6 7 8 0 0\n\
                    cpu1 100 0 50 9000 7 1 2 3 0 0\n\
                    cpu10 9 9 9 9 9 9 9 9 0 0\n\
                    intr 5\n";
        // user + nice + system + irq + softirq + steal; idle, iowait out.
        assert_eq!(parse_cpu_busy_ticks(stat, 0), Some(1 + 2 + 3 + 6 + 7 + 8));
        assert_eq!(parse_cpu_busy_ticks(stat, 1), Some(100 + 50 + 1 + 2 + 3));
        // cpu1 must not match the cpu10 line or the other way round.
        assert_eq!(parse_cpu_busy_ticks(stat, 10), Some(54));
        assert_eq!(parse_cpu_busy_ticks(stat, 2), None);
        assert_eq!(parse_cpu_busy_ticks("cpu0 1 2 3\n", 0), None);
        assert!(cpu_busy_seconds(0).unwrap() >= 0.0);
    }

    #[test]
    fn all_cpus_busy_and_total() {
        let stat = "cpu  10 1 5 100 7 2 3 4 9 0\ncpu0 10 1 5 100 7 2 3 4 9 0\n";
        // user nice system idle iowait irq softirq steal (guest is inside user).
        assert_eq!(parse_all_cpus_ticks(stat), (10 + 1 + 5 + 2 + 3 + 4, 132));
        assert_eq!(parse_all_cpus_ticks(""), (0, 0));
    }

    #[test]
    fn udp_drops_sees_own_socket() {
        use std::os::unix::fs::MetadataExt;
        use std::os::unix::io::{AsRawFd, FromRawFd};
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        // The socket's inode (fstat of its fd) is the table's inode column.
        // SAFETY: the fd is open for the life of `s`; ManuallyDrop keeps the
        // borrowed File from closing it.
        let file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(s.as_raw_fd()) });
        let inode = file.metadata().unwrap().ino().to_string();
        let table = std::fs::read_to_string("/proc/net/udp").unwrap();
        let listed = table.lines().skip(1).any(|l| l.split_whitespace().nth(9) == Some(inode.as_str()));
        if !listed {
            // Seen on one CI machine: a /proc/net/udp that does not list
            // this process's sockets. Nothing to read there; the parsers are
            // tested on fixed tables above.
            eprintln!("skipped: /proc/net/udp does not list this process's socket (inode {inode})");
            return;
        }
        assert_eq!(parse_udp_drops(&table, port), Some(0), "port {port} in:\n{table}");
    }
}
