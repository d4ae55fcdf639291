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

/// The cases of `xen-dom0-tests ctrl-domu`, in order.
pub(crate) const DOMU_CASES: &[&str] = &[
    "ctrl_domu_created",
    "ctrl_domu_listed_as_xl_lists_it",
    "ctrl_domu_pause_stops_it",
    "ctrl_domu_unpause_resumes_it",
    "foreign_domu_console_page",
    "foreign_domu_grant_table_resource",
    "foreign_domu_page_round_trip",
    "ctrl_domu_destroy_removes_it",
];

/// `xen-dom0-tests ctrl-domu <domU options>`: creates a domU with `xl`, then steers and reads it
/// through `xen-ctrl` and privcmd's foreign mappings, with `xl list` and xenstore as the oracles.
pub(crate) fn domu(args: &[String]) -> std::process::ExitCode {
    use xen_testbed_protocol::{Reporter, Stdout};
    let spec = match crate::domu::Spec::parse_for("ctrl-domu", args) {
        Ok(spec) => spec,
        Err(usage) => return usage,
    };
    let mut reporter = Reporter::new(Stdout);
    let created = crate::domu::Domain::create(&spec).and_then(|domain| {
        domain.unpause()?;
        domain.wait_for_key(
            xen_testbed_protocol::exchange::READY,
            "1",
            crate::domu::READY_TIMEOUT,
        )?;
        Ok(domain)
    });
    let (domain, ctrl) = match (created, ctrl()) {
        (Ok(domain), Ok(ctrl)) => {
            reporter.case(DOMU_CASES[0], Ok::<(), String>(()));
            (domain, ctrl)
        }
        (created, ctrl) => {
            let error = created.err().or(ctrl.err()).unwrap_or_default();
            for case in DOMU_CASES {
                reporter.case(case, Err(&error));
            }
            return std::process::ExitCode::from(reporter.done().exit_code());
        }
    };
    let domid = DomId(domain.domid as u16);
    let privcmd = ctrl.hypercall();
    reporter.case(DOMU_CASES[1], listed(&ctrl, domid));
    reporter.case(DOMU_CASES[2], paused(&ctrl, domid));
    reporter.case(DOMU_CASES[3], unpaused(&ctrl, domid));
    reporter.case(DOMU_CASES[4], console_page(privcmd, &domain, domid));
    reporter.case(DOMU_CASES[5], grant_table(privcmd, &domain, domid));
    reporter.case(DOMU_CASES[6], round_trip(privcmd, &domain, domid));
    reporter.case(DOMU_CASES[7], destroyed(&ctrl, domid));
    // Whatever happened, leave no domain behind (xl also removes its xenstore home).
    let _ = domain.destroy();
    std::process::ExitCode::from(reporter.done().exit_code())
}

/// The domU's row of `xl list`, and ours.
fn rows(ctrl: &XenCtrl<Privcmd>, domid: DomId) -> Result<(String, DomainInfo), String> {
    let info = ctrl
        .domain_info(domid)
        .map_err(|e| format!("getdomaininfo {domid}: {e}"))?;
    let xl = xl_list()?;
    let (_, mem, vcpus, state) = xl
        .into_iter()
        .find(|row| row.0 == domid.0)
        .ok_or(format!("xl list does not show domain {domid}"))?;
    if (mem, vcpus) != (info.memory_kib() / 1024, info.online_vcpus) {
        return Err(format!(
            "xl list: {mem} MiB, {vcpus} vCPUs; getdomaininfo: {info:?}"
        ));
    }
    Ok((state, info))
}

fn listed(ctrl: &XenCtrl<Privcmd>, domid: DomId) -> Result<(), String> {
    rows(ctrl, domid)?;
    let in_list = ctrl
        .domains()
        .map(|d| d.map(|d| d.domid))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if !in_list.contains(&domid) {
        return Err(format!("getdomaininfolist {in_list:?} lacks {domid}"));
    }
    Ok(())
}

/// Paused: `p` in `xl list`, PAUSED in the flags, and no CPU time accrues.
fn paused(ctrl: &XenCtrl<Privcmd>, domid: DomId) -> Result<(), String> {
    ctrl.pause_domain(domid)
        .map_err(|e| format!("pausedomain: {e}"))?;
    let (state, before) = rows(ctrl, domid)?;
    if state.as_bytes().get(2) != Some(&b'p')
        || !before.flags.contains(xen_ctrl::DomainFlags::PAUSED)
    {
        return Err(format!(
            "after pausedomain: xl list {state}, flags {:?}",
            before.flags
        ));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let after = ctrl.domain_info(domid).map_err(|e| e.to_string())?;
    if after.cpu_time_ns != before.cpu_time_ns {
        return Err(format!(
            "paused, yet its CPU time went from {} to {} ns",
            before.cpu_time_ns, after.cpu_time_ns
        ));
    }
    Ok(())
}

/// Unpaused: no `p`, no PAUSED; a second unpause is refused (`EINVAL`: not paused).
fn unpaused(ctrl: &XenCtrl<Privcmd>, domid: DomId) -> Result<(), String> {
    ctrl.unpause_domain(domid)
        .map_err(|e| format!("unpausedomain: {e}"))?;
    let (state, info) = rows(ctrl, domid)?;
    if state.as_bytes().get(2) == Some(&b'p') || info.flags.contains(xen_ctrl::DomainFlags::PAUSED)
    {
        return Err(format!(
            "after unpausedomain: xl list {state}, flags {:?}",
            info.flags
        ));
    }
    match ctrl.unpause_domain(domid) {
        Err(Error::Xen(Errno::EINVAL)) => Ok(()),
        other => Err(format!("a second unpausedomain: {other:?}")),
    }
}

/// The last (up to 2048) bytes the domU wrote to its console ring (`console/ring-ref`, a frame
/// of the domU), mapped as xenconsoled maps it.
fn console_text(
    privcmd: &Privcmd,
    domain: &crate::domu::Domain,
    domid: DomId,
) -> Result<String, String> {
    let frame: u64 = domain
        .read("console/ring-ref")?
        .parse()
        .map_err(|e| format!("console/ring-ref: {e}"))?;
    let mapping = privcmd
        .map_foreign(domid, &[frame])
        .map_err(|e| format!("MMAPBATCH_V2 of console frame {frame:#x}: {e}"))?;
    let page = mapping
        .page(0)
        .map_err(|e| format!("console frame {frame:#x}: {e}"))?;
    // `xencons_interface` (io/console.h): out[2048] at 1024, out_prod at 3084.
    let mut prod = [0u8; 4];
    page.read(3084, &mut prod).map_err(|e| e.to_string())?;
    let prod = u32::from_ne_bytes(prod);
    let len = prod.min(2048) as usize;
    let mut text = Vec::with_capacity(len);
    for i in (0..len).rev() {
        let index = prod.wrapping_sub(1 + i as u32) as usize % 2048;
        let mut byte = [0u8];
        page.read(1024 + index, &mut byte)
            .map_err(|e| e.to_string())?;
        text.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// The domU's console ring, mapped by frame, holds its `XENTEST` lines.
fn console_page(
    privcmd: &Privcmd,
    domain: &crate::domu::Domain,
    domid: DomId,
) -> Result<(), String> {
    let text = console_text(privcmd, domain, domid)?;
    if !text.contains("XENTEST") {
        return Err(format!(
            "the console ring does not hold the domU's lines: {text:?}"
        ));
    }
    Ok(())
}

/// Grant entry `gref` of the domU's table (`grant_entry_v1`: flags u16, domid u16, frame u32),
/// through `MMAP_RESOURCE` of the table frame holding it.
fn grant_entry(privcmd: &Privcmd, domid: DomId, gref: u32) -> Result<(u16, u16, u32), String> {
    let kind = xen_hypercall_privcmd::ResourceType::GRANT_TABLE;
    let per_frame = 4096 / 8;
    let mapping = privcmd
        .map_resource(domid, kind, 0, gref / per_frame, 1)
        .map_err(|e| format!("MMAP_RESOURCE of grant frame {}: {e}", gref / per_frame))?;
    let page = mapping.all().ok_or("grant frame not mapped")?;
    let mut bytes = [0u8; 8];
    page.read((gref % per_frame) as usize * 8, &mut bytes)
        .map_err(|e| e.to_string())?;
    Ok((
        u16::from_ne_bytes([bytes[0], bytes[1]]),
        u16::from_ne_bytes([bytes[2], bytes[3]]),
        u32::from_ne_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
    ))
}

/// The domU's grant table through `MMAP_RESOURCE`: entries 0 and 1, which the toolstack seeds
/// for the console and xenstore rings (`xc_dom_gnttab_seed`), grant those frames to dom0.
fn grant_table(
    privcmd: &Privcmd,
    domain: &crate::domu::Domain,
    domid: DomId,
) -> Result<(), String> {
    let kind = xen_hypercall_privcmd::ResourceType::GRANT_TABLE;
    let frames = privcmd
        .resource_size(domid, kind, 0)
        .map_err(|e| format!("grant table size: {e}"))?;
    if frames == 0 {
        return Err("the grant table has no frames".into());
    }
    for (index, key) in [(0, "console/ring-ref"), (1, "store/ring-ref")] {
        let ring: u64 = domain
            .read(key)?
            .parse()
            .map_err(|e| format!("{key}: {e}"))?;
        let (flags, granted_to, frame) = grant_entry(privcmd, domid, index)?;
        let permit = xen_sys::GTF_permit_access as u16;
        if flags & permit == 0 || granted_to != 0 || u64::from(frame) != ring {
            return Err(format!(
                "grant entry {index}: flags {flags:#x}, domid {granted_to}, frame {frame:#x}; \
                 expected access for dom0 to {key} {ring:#x} ({frames} frames in all)"
            ));
        }
    }
    Ok(())
}

/// The page the domU granted dom0 (its reference in `data/grant-ref`): its frame from the grant
/// table (`MMAP_RESOURCE`), the page itself mapped by frame (`MMAPBATCH_V2`, not through the
/// grant), the domU's text read there, dom0's text written at its offset, the domU notified on
/// its port; the domU reports seeing it (`grant_sees_dom0_write ok`) on its console ring, read
/// through the same kind of mapping.
fn round_trip(privcmd: &Privcmd, domain: &crate::domu::Domain, domid: DomId) -> Result<(), String> {
    use xen_testbed_protocol::exchange;
    let gref = domain.read_number(exchange::GRANT_REF)?;
    let (flags, granted_to, frame) = grant_entry(privcmd, domid, gref)?;
    if flags & xen_sys::GTF_permit_access as u16 == 0 || granted_to != 0 {
        return Err(format!(
            "grant {gref}: flags {flags:#x}, domid {granted_to}: not access for dom0"
        ));
    }
    let mapping = privcmd
        .map_foreign(domid, &[u64::from(frame)])
        .map_err(|e| format!("MMAPBATCH_V2 of granted frame {frame:#x}: {e}"))?;
    let page = mapping
        .page(0)
        .map_err(|e| format!("granted frame {frame:#x}: {e}"))?;
    let mut text = vec![0u8; exchange::DOMU_TEXT.len()];
    page.read(0, &mut text).map_err(|e| e.to_string())?;
    if text != exchange::DOMU_TEXT.as_bytes() {
        return Err(format!(
            "frame {frame:#x} starts with {:?}, not the domU's text",
            String::from_utf8_lossy(&text)
        ));
    }
    page.write(exchange::DOM0_TEXT_OFFSET, exchange::DOM0_TEXT.as_bytes())
        .map_err(|e| e.to_string())?;
    let remote = domain.read_number(exchange::EVTCHN_PORT)?;
    let port = crate::devices::InterdomainPort::bind(domain.domid, remote)?;
    port.notify()?;
    let seen = "XENTEST CASE grant_sees_dom0_write ok";
    let start = std::time::Instant::now();
    loop {
        let console = console_text(privcmd, domain, domid)?;
        if console.contains(seen) {
            return Ok(());
        }
        if start.elapsed() > std::time::Duration::from_secs(5) {
            let tail: Vec<&str> = console.lines().rev().take(3).collect();
            return Err(format!(
                "5 s after the notification, no `{seen}` (last: {})",
                tail.join(" | ")
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Destroyed: `getdomaininfo` says no such domain (after the dying domain is freed) and `xl list`
/// no longer shows it.
fn destroyed(ctrl: &XenCtrl<Privcmd>, domid: DomId) -> Result<(), String> {
    ctrl.destroy_domain(domid)
        .map_err(|e| format!("destroydomain: {e}"))?;
    let start = std::time::Instant::now();
    loop {
        match ctrl.domain_info(domid) {
            Err(Error::NoSuchDomain(_)) => break,
            Ok(info) if start.elapsed() < std::time::Duration::from_secs(10) => {
                if !info.flags.contains(xen_ctrl::DomainFlags::DYING) {
                    return Err(format!("destroyed, yet not dying: {info:?}"));
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return Err(format!("10 s after destroydomain: {other:?}")),
        }
    }
    if xl_list()?.iter().any(|row| row.0 == domid.0) {
        return Err(format!("xl list still shows domain {domid}"));
    }
    Ok(())
}
