//! The process basics for `/metrics`, read from `/proc/self` (Linux; the
//! figures are absent elsewhere).

#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessSample {
    pub resident_memory_bytes: Option<i64>,
    pub virtual_memory_bytes: Option<i64>,
    pub open_fds: Option<i64>,
    pub threads: Option<i64>,
}

pub fn sample() -> ProcessSample {
    let mut sample = ProcessSample::default();
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        for line in status.lines() {
            let kib = |rest: &str| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<i64>()
                    .ok()
                    .map(|k| k * 1024)
            };
            if let Some(rest) = line.strip_prefix("VmRSS:") {
                sample.resident_memory_bytes = kib(rest);
            } else if let Some(rest) = line.strip_prefix("VmSize:") {
                sample.virtual_memory_bytes = kib(rest);
            } else if let Some(rest) = line.strip_prefix("Threads:") {
                sample.threads = rest.trim().parse().ok();
            }
        }
    }
    sample.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|entries| entries.count() as i64);
    sample
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let sample = super::sample();
        if cfg!(target_os = "linux") {
            assert!(sample.resident_memory_bytes.unwrap() > 0);
            assert!(sample.open_fds.unwrap() > 0);
            assert!(sample.threads.unwrap() >= 1);
        }
    }
}
