//! `xen-ctrl` in a dom0 with the toolstack: the domain list and the host's facts compared with
//! Debian's `xl list` and `xl info` on the same boot (libxl over libxenctrl, an independent
//! implementation), the interface version each release speaks, and typed refusals.

use xen_ctrl::{DomainInfo, Error, PhysCaps, XenCtrl};
use xen_hypercall::{DomId, Errno};
use xen_hypercall_privcmd::Privcmd;

type Case = crate::Case;

pub(crate) const CASES: &[Case] = &[
    ("ctrl_interface_of_this_release", interface_of_this_release),
    ("ctrl_domains_match_xl_list", domains_match_xl_list),
    ("ctrl_physinfo_matches_xl_info", physinfo_matches_xl_info),
    (
        "ctrl_bad_domid_is_no_such_domain",
        bad_domid_is_no_such_domain,
    ),
    ("ctrl_dom0_cannot_pause_itself", dom0_cannot_pause_itself),
];

/// Domain control over a privcmd handle of its own (the cases' handle is borrowed).
fn ctrl() -> Result<XenCtrl<Privcmd>, String> {
    Ok(XenCtrl::new(
        Privcmd::open().map_err(|e| format!("cannot open privcmd: {e}"))?,
    ))
}

/// The domctl version of the release this boot runs: the same binary runs on both.
fn interface_of_this_release(_: &Privcmd) -> Result<(), String> {
    let release = std::env::var("XENTEST_XEN_VERSION").map_err(|_| "XENTEST_XEN_VERSION unset")?;
    let expected = match release.as_str() {
        "4.17" => 0x15,
        "4.20" => 0x17,
        other => return Err(format!("no expected domctl version for Xen {other}")),
    };
    let interface = ctrl()?.interface().map_err(|e| e.to_string())?;
    if interface.domctl_version() != expected || interface.sysctl_version() != 0x15 {
        return Err(format!(
            "Xen {release}: proved domctl {:#x}, sysctl {:#x}; expected domctl {expected:#x}, sysctl 0x15",
            interface.domctl_version(),
            interface.sysctl_version()
        ));
    }
    Ok(())
}

/// One row of `xl list`: id, memory (MiB), vCPUs, state letters.
fn xl_list() -> Result<Vec<(u16, u64, u32, String)>, String> {
    let out = crate::run_tool("xl", &["list"])?;
    out.lines()
        .skip(1)
        .map(|line| {
            // Name (may hold spaces in theory; not in the testbed), ID, Mem, VCPUs, State, Time.
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [.., id, mem, vcpus, state, _time] => Ok((
                    id.parse().map_err(|_| format!("bad id in `{line}`"))?,
                    mem.parse().map_err(|_| format!("bad memory in `{line}`"))?,
                    vcpus
                        .parse()
                        .map_err(|_| format!("bad vcpus in `{line}`"))?,
                    (*state).to_string(),
                )),
                _ => Err(format!("unexpected `xl list` line `{line}`")),
            }
        })
        .collect()
}

/// `getdomaininfolist` (through [`XenCtrl::domains`]) against `xl list`: ids, memory, vCPUs
/// and state letters. `xl list` runs between two of our lists, so a domain whose state changed
/// meanwhile matches one of them.
pub(crate) fn domains_match_xl_list(_: &Privcmd) -> Result<(), String> {
    let ctrl = ctrl()?;
    let list = || -> Result<Vec<DomainInfo>, String> {
        ctrl.domains()
            .collect::<Result<_, _>>()
            .map_err(|e: Error| format!("getdomaininfolist: {e}"))
    };
    let before = list()?;
    let xl = xl_list()?;
    let after = list()?;
    let row = |d: &DomainInfo| {
        (
            d.domid.0,
            d.memory_kib() / 1024,
            d.online_vcpus,
            String::from_utf8_lossy(&d.state_letters()).into_owned(),
        )
    };
    let ours_before: Vec<_> = before.iter().map(row).collect();
    let ours_after: Vec<_> = after.iter().map(row).collect();
    // State letters may differ between calls (a vCPU runs or blocks): compare them per domain
    // with either of our lists, everything else exactly.
    let without_state = |rows: &[(u16, u64, u32, String)]| -> Vec<(u16, u64, u32)> {
        rows.iter().map(|(i, m, v, _)| (*i, *m, *v)).collect()
    };
    if without_state(&xl) != without_state(&ours_before)
        && without_state(&xl) != without_state(&ours_after)
    {
        return Err(format!(
            "xl list {xl:?}, ours {ours_before:?} then {ours_after:?}"
        ));
    }
    for (id, _, _, state) in &xl {
        let ours = |rows: &[(u16, u64, u32, String)]| {
            rows.iter().find(|r| r.0 == *id).map(|r| r.3.clone())
        };
        if ours(&ours_before).as_ref() != Some(state) && ours(&ours_after).as_ref() != Some(state) {
            return Err(format!(
                "domain {id}: xl list says {state}, ours {:?} then {:?}",
                ours(&ours_before),
                ours(&ours_after)
            ));
        }
    }
    // getdomaininfo of each domain agrees with the list.
    for info in &after {
        let one = ctrl
            .domain_info(info.domid)
            .map_err(|e| format!("getdomaininfo {}: {e}", info.domid))?;
        if (one.domid, one.max_pages, one.handle) != (info.domid, info.max_pages, info.handle) {
            return Err(format!(
                "getdomaininfo {one:?} differs from the list's {info:?}"
            ));
        }
    }
    Ok(())
}

/// `xl info`'s `key : value` lines.
fn xl_info() -> Result<Vec<(String, String)>, String> {
    Ok(crate::run_tool("xl", &["info"])?
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(':')?;
            Some((key.trim().to_string(), value.trim().to_string()))
        })
        .collect())
}

/// `virt_caps` as xl prints it (tools/xl/xl_info.c, `output_physinfo`).
fn virt_caps(caps: PhysCaps) -> String {
    let has = |c| caps.contains(c);
    let words = [
        (has(PhysCaps::PV), "pv"),
        (has(PhysCaps::HVM), "hvm"),
        (
            has(PhysCaps::HVM) && has(PhysCaps::DIRECTIO),
            "hvm_directio",
        ),
        (has(PhysCaps::PV) && has(PhysCaps::DIRECTIO), "pv_directio"),
        (has(PhysCaps::HAP), "hap"),
        (has(PhysCaps::SHADOW), "shadow"),
        (has(PhysCaps::IOMMU_HAP_PT_SHARE), "iommu_hap_pt_share"),
        (has(PhysCaps::VMTRACE), "vmtrace"),
        (has(PhysCaps::VPMU), "vpmu"),
        (has(PhysCaps::GNTTAB_V1), "gnttab-v1"),
        (has(PhysCaps::GNTTAB_V2), "gnttab-v2"),
    ];
    words
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, word)| *word)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `physinfo` against `xl info`: CPUs, topology, frequency, hw and virt caps, total memory
/// exactly; free memory within 4 MiB (dom0's own allocations between the two calls).
pub(crate) fn physinfo_matches_xl_info(_: &Privcmd) -> Result<(), String> {
    let info = ctrl()?.physinfo().map_err(|e| format!("physinfo: {e}"))?;
    let xl = xl_info()?;
    let hw_caps = info
        .hw_cap
        .iter()
        .map(|w| format!("{w:08x}"))
        .collect::<Vec<_>>()
        .join(":");
    let ours = [
        ("nr_cpus", info.nr_cpus.to_string()),
        ("max_cpu_id", info.max_cpu_id.to_string()),
        ("nr_nodes", info.nr_nodes.to_string()),
        ("cores_per_socket", info.cores_per_socket.to_string()),
        ("threads_per_core", info.threads_per_core.to_string()),
        (
            "cpu_mhz",
            format!("{}.{:03}", info.cpu_khz / 1000, info.cpu_khz % 1000),
        ),
        ("hw_caps", hw_caps),
        ("virt_caps", virt_caps(info.capabilities)),
        ("total_memory", (info.total_pages / 256).to_string()),
    ];
    let value = |key: &str| {
        xl.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .ok_or(format!("xl info has no {key}"))
    };
    for (key, ours) in &ours {
        let theirs = value(key)?;
        if theirs != ours {
            return Err(format!("{key}: xl info says `{theirs}`, physinfo `{ours}`"));
        }
    }
    let free: u64 = value("free_memory")?
        .parse()
        .map_err(|_| "bad free_memory")?;
    let ours_free = info.free_pages.saturating_sub(info.outstanding_pages) / 256;
    if free.abs_diff(ours_free) > 4 {
        return Err(format!(
            "free_memory: xl info says {free} MiB, physinfo {ours_free} MiB"
        ));
    }
    Ok(())
}

/// A domain that does not exist is a typed error, for every command that names one.
fn bad_domid_is_no_such_domain(_: &Privcmd) -> Result<(), String> {
    let ctrl = ctrl()?;
    let missing = DomId(0x7000);
    let results = [
        ("getdomaininfo", ctrl.domain_info(missing).map(drop)),
        ("pausedomain", ctrl.pause_domain(missing)),
        ("unpausedomain", ctrl.unpause_domain(missing)),
        ("destroydomain", ctrl.destroy_domain(missing)),
        ("getvcpuinfo", ctrl.vcpu_info(missing, 0).map(drop)),
    ];
    for (what, result) in results {
        if result != Err(Error::NoSuchDomain(missing)) {
            return Err(format!("{what} of domain {missing}: {result:?}"));
        }
    }
    Ok(())
}

/// Xen refuses a domain pausing itself (`EINVAL`, domctl.c `pausedomain`), and vCPU 0 of dom0
/// is online.
fn dom0_cannot_pause_itself(_: &Privcmd) -> Result<(), String> {
    let ctrl = ctrl()?;
    match ctrl.pause_domain(DomId(0)) {
        Err(Error::Xen(Errno::EINVAL)) => {}
        other => return Err(format!("pausing dom0 from dom0: {other:?}")),
    }
    let vcpu = ctrl
        .vcpu_info(DomId(0), 0)
        .map_err(|e| format!("getvcpuinfo 0/0: {e}"))?;
    if !vcpu.online {
        return Err(format!("dom0's vCPU 0: {vcpu:?}"));
    }
    Ok(())
}
