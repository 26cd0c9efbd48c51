//! The process's own health, under the names of Prometheus' standard process
//! collector (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
//! `process_start_time_seconds`), so the dashboards and alerts operators
//! already have for every other service work on the sidecar unchanged.
//!
//! Read from `/proc` when a scrape or an export collects (never on the
//! request path), as client_golang's collector does: CPU time and start
//! time from `/proc/self/stat` (in clock ticks of 1/100 s, the kernel's
//! `USER_HZ` on every Linux architecture the sidecar builds for), memory
//! from `/proc/self/status`, descriptors from `/proc/self/fd` and
//! `/proc/self/limits`. Elsewhere (not Linux) nothing is reported.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::metrics::{Meter, ObservableCounter, ObservableGauge};

/// Clock ticks per second in `/proc` (`USER_HZ`).
const TICKS_PER_SECOND: f64 = 100.0;

/// The observable instruments (kept so their callbacks stay registered).
pub struct ProcessInstruments {
    _cpu: ObservableCounter<f64>,
    _resident: ObservableGauge<u64>,
    _virtual: ObservableGauge<u64>,
    _open_fds: ObservableGauge<u64>,
    _max_fds: ObservableGauge<u64>,
    _start_time: ObservableGauge<f64>,
    _busy_poll_idle: ObservableCounter<f64>,
}

impl ProcessInstruments {
    /// Registers the instruments on `meter`; `fallback_start` is reported as
    /// the start time when `/proc` cannot tell it.
    pub fn register(meter: &Meter, fallback_start: SystemTime) -> ProcessInstruments {
        let start = start_time().unwrap_or(fallback_start);
        let start = start
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        ProcessInstruments {
            _cpu: meter
                .f64_observable_counter("process.cpu.seconds")
                .with_unit("s")
                .with_description("Total user and system CPU time spent in seconds.")
                .with_callback(|o| {
                    if let Some(stat) = Stat::read() {
                        o.observe(stat.cpu_seconds(), &[]);
                    }
                })
                .build(),
            _resident: meter
                .u64_observable_gauge("process.resident_memory")
                .with_unit("By")
                .with_description("Resident memory size in bytes.")
                .with_callback(|o| {
                    if let Some(m) = Memory::read() {
                        o.observe(m.resident, &[]);
                    }
                })
                .build(),
            _virtual: meter
                .u64_observable_gauge("process.virtual_memory")
                .with_unit("By")
                .with_description("Virtual memory size in bytes.")
                .with_callback(|o| {
                    if let Some(m) = Memory::read() {
                        o.observe(m.virtual_size, &[]);
                    }
                })
                .build(),
            _open_fds: meter
                .u64_observable_gauge("process.open_fds")
                .with_description("Number of open file descriptors.")
                .with_callback(|o| {
                    if let Some(n) = open_fds() {
                        o.observe(n, &[]);
                    }
                })
                .build(),
            _max_fds: meter
                .u64_observable_gauge("process.max_fds")
                .with_description("Maximum number of open file descriptors.")
                .with_callback(|o| {
                    if let Some(n) = max_fds() {
                        o.observe(n, &[]);
                    }
                })
                .build(),
            _start_time: meter
                .f64_observable_gauge("process.start_time")
                .with_unit("s")
                .with_description("Start time of the process since unix epoch in seconds.")
                .with_callback(move |o| o.observe(start, &[]))
                .build(),
            // Not the standard collector's, but read the same way: the part
            // of the CPU time above that only polled (crate::busy_poll).
            _busy_poll_idle: meter
                .f64_observable_counter("sidecar.busy_poll.idle")
                .with_unit("s")
                .with_description(
                    "CPU time spent polling for events with none to handle (server.busy_poll).",
                )
                .with_callback(|o| o.observe(crate::busy_poll::idle_seconds(), &[]))
                .build(),
        }
    }
}

/// The fields of `/proc/self/stat` used here.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    utime: u64,
    stime: u64,
    /// Ticks after boot.
    starttime: u64,
}

impl Stat {
    fn read() -> Option<Stat> {
        Stat::parse(&std::fs::read_to_string("/proc/self/stat").ok()?)
    }

    /// Fields after the command name, which is in parentheses and may
    /// itself hold spaces and parentheses (so split after the last `)`).
    fn parse(text: &str) -> Option<Stat> {
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state); utime is 14, stime 15, starttime 22.
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Stat {
            utime: field(14)?,
            stime: field(15)?,
            starttime: field(22)?,
        })
    }

    fn cpu_seconds(self) -> f64 {
        (self.utime + self.stime) as f64 / TICKS_PER_SECOND
    }
}

/// Resident and virtual size from `/proc/self/status` (in kB there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Memory {
    resident: u64,
    virtual_size: u64,
}

impl Memory {
    fn read() -> Option<Memory> {
        Memory::parse(&std::fs::read_to_string("/proc/self/status").ok()?)
    }

    fn parse(text: &str) -> Option<Memory> {
        let kb = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
                .map(|kb| kb * 1024)
        };
        Some(Memory {
            resident: kb("VmRSS:")?,
            virtual_size: kb("VmSize:")?,
        })
    }
}

fn open_fds() -> Option<u64> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    // The directory handle being read is itself one of them: not counted.
    Some((dir.count() as u64).saturating_sub(1))
}

fn max_fds() -> Option<u64> {
    parse_max_fds(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

/// The soft limit of `Max open files` (`unlimited` as `u64::MAX`).
fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .strip_prefix("Max open files")?
        .split_whitespace()
        .next()?;
    match soft {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

/// Boot time (`btime` in `/proc/stat`) plus the process's start in ticks.
fn start_time() -> Option<SystemTime> {
    let stat = Stat::read()?;
    let boot = parse_btime(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let after_boot = Duration::from_secs_f64(stat.starttime as f64 / TICKS_PER_SECOND);
    Some(UNIX_EPOCH + Duration::from_secs(boot) + after_boot)
}

fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        let line = "4242 (factory (side) car) S 1 4242 4242 0 -1 4194560 2370 0 0 0 \
                    150 25 0 0 20 0 3 0 123456 12345678 1234 18446744073709551615";
        let stat = Stat::parse(line).expect("parses");
        assert_eq!(
            stat,
            Stat {
                utime: 150,
                stime: 25,
                starttime: 123456
            }
        );
        assert!((stat.cpu_seconds() - 1.75).abs() < 1e-9);
        assert_eq!(Stat::parse("garbage"), None);
    }

    #[test]
    fn memory_limits_and_boot_time_are_parsed() {
        let status = "Name:\tfactory-sidecar\nVmSize:\t  123456 kB\nVmRSS:\t    7890 kB\n";
        assert_eq!(
            Memory::parse(status),
            Some(Memory {
                resident: 7890 * 1024,
                virtual_size: 123456 * 1024
            })
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            16384                524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(16384));
        assert_eq!(
            parse_max_fds(
                "Max open files            unlimited            unlimited            files\n"
            ),
            Some(u64::MAX)
        );
        assert_eq!(
            parse_btime("cpu 1 2 3\nbtime 1733480000\n"),
            Some(1_733_480_000)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_can_be_read() {
        assert!(Stat::read().is_some());
        assert!(Memory::read().is_some_and(|m| m.resident > 0));
        assert!(open_fds().is_some_and(|n| n >= 3));
        assert!(max_fds().is_some_and(|n| n > 0));
        let start = start_time().expect("start time");
        assert!(start <= SystemTime::now());
    }
}
