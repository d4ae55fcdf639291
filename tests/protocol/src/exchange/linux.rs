//! The Linux domU run (`xen-dom0-tests linux-domu-peer` in dom0, `xen-dom0-tests linux-domu` in
//! a Linux domU booted from Debian's kernel with a busybox initramfs): the project's crates on the
//! Linux devices a domU has, against dom0. Keys are relative to the domU's home.
//!
//! 1. dom0 creates the domU and unpauses it; its `/init` loads the Xen modules and runs the
//!    program, which opens `/dev/xen/xenbus` with xen-store, reads its `domid`, writes
//!    [`WRITTEN`] = [`WRITTEN_TEXT`] and reads it back, is refused dom0's home (`EACCES`), writes
//!    [`DOMID`] = its domid and [`READY`] = `1`.
//! 2. dom0 checks both keys with Debian's `xenstore-read` (the oracle).
//! 3. The domU watches [`POKE`] and, once the watch's first event came, writes [`WATCHING`] =
//!    `1`; dom0 writes [`POKE`] = [`POKE_TEXT`]; the domU's watch fires and it reads the text.
//!    From here on the domU waits for dom0 on this watch: dom0 writes [`POKE`] = a step name.
//! 4. Event channels, once through xen-evtchn's device backend ([`DEVICE_PORT`]), once through
//!    its tokio backend ([`TOKIO_PORT`]): the domU allocates a port for dom0 and writes it; dom0
//!    binds it (its port at [`DOM0_PORT`] for the device run), drains the pending event of the
//!    bind and pokes [`STEP_BOUND`] ([`STEP_BOUND_TOKIO`]); the domU notifies first and the two
//!    alternate for [`ROUND_TRIPS`] round trips: each side sends and receives as many events, a
//!    lost one stops the run at a timeout, and none may come after the last.
//! 5. Between the two, the privcmd backend in the domU: `xen_version` (written to
//!    [`XEN_VERSION`], which dom0 compares with its own), a `SCHEDOP_yield`, `EVTCHNOP_status` of
//!    its device port (interdomain with dom0's [`DOM0_PORT`], which dom0 keeps bound until it
//!    read [`XEN_VERSION`]); and what Xen refuses a domU:
//!    `XENVER_build_id` and the `readconsole` sysctl (`EPERM`), the status of dom0's port
//!    (`EPERM`), `XENVER_commandline` (answered `<denied>`, not an error).
//! 6. The domU shares a page with dom0 through gntalloc, [`DOMU_TEXT`](super::DOMU_TEXT) at its
//!    start, and writes its reference at [`GRANT_REF`]; dom0 maps it with gntdev, checks the
//!    text, writes [`DOM0_TEXT`](super::DOM0_TEXT) at [`DOM0_TEXT_OFFSET`](super::DOM0_TEXT_OFFSET)
//!    and pokes [`STEP_MAPPED`]; the domU reads dom0's text and writes [`GRANT_READ`] = `1`; dom0
//!    unmaps and pokes [`STEP_UNMAPPED`]; the domU drops the share (nothing leaked) and writes
//!    [`GRANT_RELEASED`] = `1`; dom0 fails to map the reference again.
//! 7. xen-vchan against Debian's libxenvchan across the two domains, one [`VchanRun`] of
//!    [`VCHAN_RUNS`] after the other, each started by dom0 poking its [`VchanRun::step`]:
//!    dom0's xen-vchan serves and the domU's C peer (`libxenvchan-peer`) connects, or the
//!    domU's C peer serves (it writes [`VCHAN_OFFERED`] = its directory once it offered the
//!    channel) and dom0's xen-vchan connects. The C peer streams [`VCHAN_BYTES`] to dom0
//!    (after receiving as many, in a run [`both_ways`](VchanRun::both_ways)), each byte
//!    checked; or its C client exits mid-stream, after which dom0's server reads the end of
//!    the stream and its write fails. Every run is held back for now
//!    ([`VCHAN_RUNS_HELD_BACK`]).
//! 8. The domU reports `DONE` and its `/init` powers it off.

/// Written by the domU once its program runs and its xenstore cases passed.
pub const READY: &str = "data/linux/ready";
/// The domU's own write under its home, read back by it and by dom0's `xenstore-read`.
pub const WRITTEN: &str = "data/linux/written";
/// What the domU writes at [`WRITTEN`].
pub const WRITTEN_TEXT: &str = "written by the Linux domU through xen-store";
/// The domid the domU read from its home (decimal).
pub const DOMID: &str = "data/linux/domid";
/// Written by the domU once its watch on [`POKE`] is registered.
pub const WATCHING: &str = "data/linux/watching";
/// Written by dom0: [`POKE_TEXT`], then each step's name.
pub const POKE: &str = "data/linux/poke";
/// dom0's first write to [`POKE`].
pub const POKE_TEXT: &str = "dom0 pokes the domU's watch";
/// The port the domU allocates for dom0 through the device backend (decimal).
pub const DEVICE_PORT: &str = "data/linux/device-port";
/// The port the domU allocates for dom0 through the tokio backend (decimal).
pub const TOKIO_PORT: &str = "data/linux/tokio-port";
/// dom0's end of the device run's channel (decimal).
pub const DOM0_PORT: &str = "data/linux/dom0-port";
/// The Xen version the domU's privcmd backend read (`major.minor`).
pub const XEN_VERSION: &str = "data/linux/xen-version";
/// The gntalloc page's reference (decimal).
pub const GRANT_REF: &str = "data/linux/grant-ref";
/// Written by the domU once it read dom0's text in the shared page.
pub const GRANT_READ: &str = "data/linux/grant-read";
/// Written by the domU once it dropped the share.
pub const GRANT_RELEASED: &str = "data/linux/grant-released";
/// Poked by dom0 once it bound the domU's port.
pub const STEP_BOUND: &str = "bound";
/// Poked by dom0 once it bound the domU's tokio port.
pub const STEP_BOUND_TOKIO: &str = "bound-tokio";
/// Poked by dom0 once it mapped the page and wrote its text.
pub const STEP_MAPPED: &str = "mapped";
/// Poked by dom0 once it unmapped the page.
pub const STEP_UNMAPPED: &str = "unmapped";
/// The round trips on each channel: each side sends and receives this many events.
pub const ROUND_TRIPS: u32 = 400;
/// How long either side waits for the other's next step or event (s).
pub const WAIT_SECONDS: u64 = 30;

/// Written by the domU once its C server offered a channel: the channel's xenstore directory.
pub const VCHAN_OFFERED: &str = "data/linux/vchan-offered";
/// The bytes each way of a [`VchanRun`] that streams both ways.
pub const VCHAN_BYTES: u64 = 4 << 20;

/// One xen-vchan run against libxenvchan across the domains.
#[derive(Debug, Clone, Copy)]
pub struct VchanRun {
    /// dom0's poke that starts it.
    pub step: &'static str,
    /// The domU's case.
    pub domu_case: &'static str,
    /// dom0's case.
    pub dom0_case: &'static str,
    /// Whether the domU's C peer serves (dom0's xen-vchan connects); else dom0 serves.
    pub domu_serves: bool,
    /// The server's minimum ring sizes: client to server, server to client (bytes).
    pub ring_sizes: (usize, usize),
    /// The size of each side's writes (bytes).
    pub chunk: usize,
    /// Whether dom0 first sends [`VCHAN_BYTES`] for the C peer to receive, then receives as
    /// many; else only the C peer sends. (dom0 to the domU, the C peer has read wrong bytes
    /// on both releases: docs/design.md, "The project's crates in a Linux domU".)
    pub both_ways: bool,
    /// Not 0: the C client exits without closing after sending this many bytes.
    pub die_after: u64,
    /// The channel's port in its conventional xenstore directory
    /// (`<server's home>/data/vchan/<client>/<port>`).
    pub port: u32,
}

/// The vchan runs, in order.
pub const VCHAN_RUNS: &[VchanRun] = &[];

/// Runs held back from [`VCHAN_RUNS`] (put them there and in the case lists to reproduce):
/// streaming [`VCHAN_BYTES`] across the domains, in either direction, the reader at times
/// finds bytes that are not the stream's, and dom0's `linux-domu-peer` has crashed (a
/// segmentation fault, "malloc(): corrupted top size") as a run began; on both releases, PV
/// and PVH, rings in the page and in their own pages (docs/design.md, "The project's crates
/// in a Linux domU").
pub const VCHAN_RUNS_HELD_BACK: &[VchanRun] = &[
    VchanRun {
        step: "vchan-c-client-dies",
        domu_case: "linux_domu_vchan_c_client_exits_mid_stream",
        dom0_case: "linux_domu_dom0_vchan_server_sees_client_exit",
        domu_serves: false,
        ring_sizes: (1 << 16, 1024),
        chunk: 4096,
        both_ways: false,
        die_after: (1 << 20) + 123,
        port: 7100,
    },
    VchanRun {
        step: "vchan-dom0-serves-in-page",
        domu_case: "linux_domu_vchan_c_client_in_page",
        dom0_case: "linux_domu_dom0_vchan_server_in_page",
        domu_serves: false,
        ring_sizes: (1024, 2048),
        chunk: 1000,
        both_ways: true,
        die_after: 0,
        port: 7101,
    },
    VchanRun {
        step: "vchan-dom0-serves-own-pages",
        domu_case: "linux_domu_vchan_c_client_own_pages",
        dom0_case: "linux_domu_dom0_vchan_server_own_pages",
        domu_serves: false,
        ring_sizes: (1 << 16, 1 << 18),
        chunk: 65536,
        both_ways: true,
        die_after: 0,
        port: 7102,
    },
    VchanRun {
        step: "vchan-domu-serves-in-page",
        domu_case: "linux_domu_vchan_c_server_in_page",
        dom0_case: "linux_domu_dom0_vchan_client_in_page",
        domu_serves: true,
        ring_sizes: (2048, 1024),
        chunk: 4096,
        both_ways: true,
        die_after: 0,
        port: 7103,
    },
    VchanRun {
        step: "vchan-domu-serves-own-pages",
        domu_case: "linux_domu_vchan_c_server_own_pages",
        dom0_case: "linux_domu_dom0_vchan_client_own_pages",
        domu_serves: true,
        ring_sizes: (1 << 18, 1 << 14),
        chunk: 3000,
        both_ways: true,
        die_after: 0,
        port: 7104,
    },
    VchanRun {
        step: "vchan-domu-client-sends-in-page",
        domu_case: "linux_domu_vchan_c_client_sends_in_page",
        dom0_case: "linux_domu_dom0_vchan_server_receives_in_page",
        domu_serves: false,
        ring_sizes: (1024, 2048),
        chunk: 1000,
        both_ways: false,
        die_after: 0,
        port: 7105,
    },
    VchanRun {
        step: "vchan-domu-server-sends-own-pages",
        domu_case: "linux_domu_vchan_c_server_sends_own_pages",
        dom0_case: "linux_domu_dom0_vchan_client_receives_own_pages",
        domu_serves: true,
        ring_sizes: (1 << 14, 1 << 18),
        chunk: 3000,
        both_ways: false,
        die_after: 0,
        port: 7106,
    },
];

/// The domU's cases, in order.
pub const DOMU_CASES: &[&str] = &[
    "linux_domu_store_own_home",
    "linux_domu_store_dom0_home_eacces",
    "linux_domu_store_watch_fires",
    "linux_domu_evtchn_device_ping_pong",
    "linux_domu_privcmd_allowed",
    "linux_domu_privcmd_refused",
    "linux_domu_evtchn_tokio_ping_pong",
    "linux_domu_gntalloc_share",
    "linux_domu_gntalloc_released",
];

/// dom0's cases, in order.
pub const DOM0_CASES: &[&str] = &[
    "linux_domu_created",
    "linux_domu_ready",
    "linux_domu_store_oracle",
    "linux_domu_watch_poked",
    "linux_domu_dom0_evtchn_device",
    "linux_domu_dom0_xen_version",
    "linux_domu_dom0_evtchn_tokio",
    "linux_domu_dom0_gntdev_map",
    "linux_domu_dom0_grant_gone",
    "domu_powered_off",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_vchan_run_is_in_both_case_lists_in_order_and_every_run_has_its_own_port() {
        let at = |cases: &[&str], case| cases.iter().position(|c| *c == case).unwrap();
        for (i, run) in VCHAN_RUNS.iter().enumerate() {
            for earlier in &VCHAN_RUNS[..i] {
                assert!(at(DOMU_CASES, earlier.domu_case) < at(DOMU_CASES, run.domu_case));
                assert!(at(DOM0_CASES, earlier.dom0_case) < at(DOM0_CASES, run.dom0_case));
            }
        }
        let all: &[&[VchanRun]] = &[VCHAN_RUNS, VCHAN_RUNS_HELD_BACK];
        let all = all.iter().flat_map(|runs| runs.iter());
        for (i, run) in all.clone().enumerate() {
            for earlier in all.clone().take(i) {
                assert!(earlier.port != run.port && earlier.step != run.step);
            }
        }
    }
}
