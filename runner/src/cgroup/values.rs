//! Which files get which values for `linux.resources`: pure, unit-tested.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources};

/// One value written into one cgroup file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// v1: the controller whose hierarchy holds `file` (unused on v2).
    pub controller: &'static str,
    /// File name inside the cgroup directory.
    pub file: &'static str,
    /// What to write.
    pub value: String,
    /// Skip when the file or controller does not exist (e.g. swap accounting off).
    pub optional: bool,
}

fn w(controller: &'static str, file: &'static str, value: impl ToString) -> Write {
    Write {
        controller,
        file,
        value: value.to_string(),
        optional: false,
    }
}

/// Writes for cgroup v1, in order (the memory limit before memsw, the CFS
/// period before the quota, deny-all before the device allow list).
pub fn v1_writes(r: &LinuxResources) -> Vec<Write> {
    let mut out = Vec::new();
    if let Some(m) = r.memory() {
        if let Some(limit) = m.limit() {
            out.push(w("memory", "memory.limit_in_bytes", limit));
        }
        if let Some(swap) = m.swap() {
            out.push(Write {
                optional: true,
                ..w("memory", "memory.memsw.limit_in_bytes", swap)
            });
        }
        if let Some(reservation) = m.reservation() {
            out.push(w("memory", "memory.soft_limit_in_bytes", reservation));
        }
        if let Some(swappiness) = m.swappiness() {
            out.push(Write {
                optional: true,
                ..w("memory", "memory.swappiness", swappiness)
            });
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(shares) = c.shares() {
            out.push(w("cpu", "cpu.shares", shares));
        }
        if let Some(period) = c.period() {
            out.push(w("cpu", "cpu.cfs_period_us", period));
        }
        if let Some(quota) = c.quota() {
            out.push(w("cpu", "cpu.cfs_quota_us", quota));
        }
    }
    if let Some(p) = r.pids() {
        out.push(w("pids", "pids.max", pids_value(p.limit())));
    }
    if let Some(rules) = r.devices() {
        for rule in rules {
            let file = if rule.allow() {
                "devices.allow"
            } else {
                "devices.deny"
            };
            out.push(w("devices", file, device_rule(rule)));
        }
        // The devices every container gets (OCI config-linux.md "Default
        // Devices") stay usable whatever the spec's rules say, as in runc;
        // one the rules already allowed after their last deny is allowed.
        let last_deny = out.iter().rposition(|w| w.file == "devices.deny");
        for rule in DEFAULT_DEVICE_RULES {
            let allowed = out
                .iter()
                .skip(last_deny.map_or(0, |i| i + 1))
                .any(|w| w.file == "devices.allow" && w.value == *rule);
            if !allowed {
                out.push(w("devices", "devices.allow", rule));
            }
        }
    }
    out
}

/// Always-allowed devices: null, zero, full, random, urandom, tty, console,
/// ptmx and the pty slaves.
const DEFAULT_DEVICE_RULES: &[&str] = &[
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

/// [`DEFAULT_DEVICE_RULES`] as spec rules, for the v2 device program.
pub(crate) fn default_device_rules() -> Vec<LinuxDeviceCgroup> {
    DEFAULT_DEVICE_RULES
        .iter()
        .filter_map(|rule| {
            let mut parts = rule.split(' ');
            let (_, numbers, access) = (parts.next()?, parts.next()?, parts.next()?);
            let (major, minor) = numbers.split_once(':')?;
            let mut b = oci_spec::runtime::LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(oci_spec::runtime::LinuxDeviceType::C)
                .access(access)
                .major(major.parse::<i64>().ok()?);
            if let Ok(minor) = minor.parse::<i64>() {
                b = b.minor(minor);
            }
            b.build().ok()
        })
        .collect()
}

/// Writes for cgroup v2. OCI's `memory.swap` is memory plus swap; v2's
/// memory.swap.max is swap alone. CPU shares map onto cpu.weight
/// (1..10000) as runc and crun do. Device rules need an eBPF program on v2
/// (see `devices`), not a file.
pub fn v2_writes(r: &LinuxResources) -> Vec<Write> {
    let mut out = Vec::new();
    if let Some(m) = r.memory() {
        if let Some(limit) = m.limit() {
            out.push(w("", "memory.max", max_or(limit)));
            if let Some(swap) = m.swap() {
                let value = if swap < 0 || limit < 0 {
                    "max".to_string()
                } else {
                    (swap - limit).max(0).to_string()
                };
                out.push(Write {
                    optional: true,
                    ..w("", "memory.swap.max", value)
                });
            }
        }
        if let Some(reservation) = m.reservation() {
            out.push(w("", "memory.low", max_or(reservation)));
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(shares) = c.shares() {
            let weight = if shares == 0 {
                100
            } else {
                1 + (shares.clamp(2, 262144) - 2) * 9999 / 262142
            };
            out.push(w("", "cpu.weight", weight));
        }
        if c.quota().is_some() || c.period().is_some() {
            let quota = c
                .quota()
                .filter(|q| *q > 0)
                .map_or("max".to_string(), |q| q.to_string());
            out.push(w(
                "",
                "cpu.max",
                format!("{quota} {}", c.period().unwrap_or(100_000)),
            ));
        }
    }
    if let Some(p) = r.pids() {
        out.push(w("", "pids.max", pids_value(p.limit())));
    }
    out
}

fn max_or(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

fn pids_value(limit: i64) -> String {
    if limit > 0 {
        limit.to_string()
    } else {
        "max".into()
    }
}

/// `type major:minor access`, `*` for a missing number (devices.rst).
fn device_rule(rule: &LinuxDeviceCgroup) -> String {
    let typ = rule
        .typ()
        .map_or_else(|| "a".to_string(), |t| t.as_str().to_string());
    let num = |n: Option<i64>| {
        n.filter(|n| *n >= 0)
            .map_or("*".to_string(), |n| n.to_string())
    };
    let access = rule.access().clone().unwrap_or_else(|| "rwm".into());
    format!("{typ} {}:{} {access}", num(rule.major()), num(rule.minor()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn resources(v: serde_json::Value) -> LinuxResources {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn v1_memory_cpu_pids() {
        let r = resources(json!({
            "memory": {"limit": 67108864, "swap": 67108864},
            "cpu": {"quota": 50000, "period": 100000},
            "pids": {"limit": 20}
        }));
        let writes: Vec<_> = v1_writes(&r)
            .into_iter()
            .map(|w| (w.controller, w.file, w.value))
            .collect();
        assert_eq!(
            writes,
            vec![
                ("memory", "memory.limit_in_bytes", "67108864".to_string()),
                (
                    "memory",
                    "memory.memsw.limit_in_bytes",
                    "67108864".to_string()
                ),
                ("cpu", "cpu.cfs_period_us", "100000".to_string()),
                ("cpu", "cpu.cfs_quota_us", "50000".to_string()),
                ("pids", "pids.max", "20".to_string()),
            ]
        );
    }

    #[test]
    fn v2_memory_cpu_pids() {
        let r = resources(json!({
            "memory": {"limit": 67108864, "swap": 134217728},
            "cpu": {"quota": 50000, "period": 100000, "shares": 1024},
            "pids": {"limit": 0}
        }));
        let writes: Vec<_> = v2_writes(&r)
            .into_iter()
            .map(|w| (w.file, w.value))
            .collect();
        assert_eq!(
            writes,
            vec![
                ("memory.max", "67108864".to_string()),
                ("memory.swap.max", "67108864".to_string()),
                ("cpu.weight", "39".to_string()),
                ("cpu.max", "50000 100000".to_string()),
                ("pids.max", "max".to_string()),
            ]
        );
    }

    #[test]
    fn device_rules_in_order() {
        let spec = crate::default_spec();
        let r = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        let writes = v1_writes(r);
        assert_eq!(
            (writes[0].file, writes[0].value.as_str()),
            ("devices.deny", "a *:* rwm")
        );
        assert_eq!(
            (writes[1].file, writes[1].value.as_str()),
            ("devices.allow", "c *:* m")
        );
        assert!(writes.iter().any(|w| w.value == "c 1:3 rwm"));
        assert!(writes.iter().any(|w| w.value == "c 136:* rwm"));
    }

    #[test]
    fn default_devices_stay_allowed_after_deny_all() {
        let r = resources(json!({"devices": [{"allow": false, "access": "rwm"}]}));
        let writes = v1_writes(&r);
        assert_eq!(writes[0].value, "a *:* rwm");
        assert!(writes[1..].iter().all(|w| w.file == "devices.allow"));
        assert!(writes.iter().any(|w| w.value == "c 1:3 rwm"));
    }
}
