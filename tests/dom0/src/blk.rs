//! `xen-dom0-tests blk-domu <domu options>`: the dom0 half of the block-device run
//! ([`exchange::blk`]). Linux's blkback (loaded by `/init`) serves the domU a disk: a loop device
//! over a file in dom0's tmpfs, filled with dom0's pattern, named to blkback by a hotplug script
//! of our own (Debian's `block` script needs bash).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use xen_testbed_protocol::bulk;
use xen_testbed_protocol::exchange::{self, blk};
use xen_testbed_protocol::{Reporter, Stdout};

use crate::domu::{ConsoleForwarder, Domain, READY_TIMEOUT, Spec, Steps, powered_off};
use crate::run_tool;

/// The file backing the disk, in dom0's tmpfs.
pub(crate) const BACKING_FILE: &str = "/tmp/xentest-disk.img";
/// The loop device over it.
pub(crate) const LOOP_DEVICE: &str = "/dev/loop0";
/// The hotplug script libxl runs for the disk.
pub(crate) const HOTPLUG_SCRIPT: &str = "/tmp/xentest-block-hotplug";
/// Where the script records each `remove` (the backend path, a line each).
const REMOVED_LOG: &str = "/tmp/xentest-hotplug-removed";
/// How long dom0 waits for the domU to write, read back and report the whole disk.
const WRITTEN_TIMEOUT: Duration = Duration::from_secs(60);

/// libxl runs it as `<script> add|remove` with `XENBUS_PATH=backend/vbd/<domid>/<devid>`:
/// `add` names the device of `params` to blkback as `major:minor` in hex (blkback waits for
/// `physical-device`) and reports success in `hotplug-status`; `remove` only records the call.
pub(crate) fn hotplug_script() -> String {
    format!(
        "#!/bin/sh\n\
         case \"$1\" in\n\
         add)\n\
         \tdevice=$(xenstore-read \"$XENBUS_PATH/params\") || exit 1\n\
         \tnumbers=$(stat -L -c '%t:%T' \"$device\") || exit 1\n\
         \txenstore-write \"$XENBUS_PATH/physical-device\" \"$numbers\" || exit 1\n\
         \txenstore-write \"$XENBUS_PATH/hotplug-status\" connected\n\
         \t;;\n\
         remove)\n\
         \techo \"$XENBUS_PATH\" >> {REMOVED_LOG}\n\
         \t;;\n\
         esac\n"
    )
}

/// `blk-domu`: exits with failure if a case failed.
pub(crate) fn run(args: &[String]) -> ExitCode {
    let mut spec = match Spec::parse_for("blk-domu", args) {
        Ok(spec) => spec,
        Err(usage) => return usage,
    };
    let mut steps = Steps {
        reporter: Reporter::new(Stdout),
        failed: None,
    };
    let device = steps.step("blk_backing_ready", |out| {
        let device = make_backing()?;
        out.out(format_args!(
            "{LOOP_DEVICE} (device {device}) over {BACKING_FILE}: {} sectors of dom0's pattern",
            blk::SECTORS
        ));
        Ok(device)
    });
    spec.disk = Some(format!(
        "phy:{LOOP_DEVICE},{},w,script={HOTPLUG_SCRIPT}",
        blk::VDEV
    ));
    let domain = steps.step("xl_create", |out| {
        let domain = Domain::create(&spec)?;
        domain.write(blk::BLK, &blk::SECTORS.to_string())?;
        out.out(format_args!(
            "xl created domU {} (domid {}) with {LOOP_DEVICE} as {}, paused",
            domain.name,
            domain.domid,
            blk::VDEV
        ));
        Ok(domain)
    });
    let forwarder = domain.as_ref().map(|d| ConsoleForwarder::start(&d.name));
    match (&domain, device) {
        (Some(domain), Some(device)) => run_with(&mut steps, domain, &device),
        _ => {
            for case in &blk::DOM0_CASES[2..] {
                steps.step(case, |_| Ok(()));
            }
        }
    }
    if let Some(forwarder) = forwarder {
        forwarder.finish();
    }
    ExitCode::from(steps.reporter.done().exit_code())
}

/// Fills the backing file with dom0's pattern, puts the loop device over it and writes the
/// hotplug script; returns the loop device's `major:minor` in hex, as the script names it.
fn make_backing() -> Result<String, String> {
    let bytes = blk::SECTORS as usize * blk::SECTOR_SIZE;
    let mut disk = vec![0; bytes];
    blk::fill(&mut disk, blk::DOM0_SEED, 0);
    fs::write(BACKING_FILE, &disk).map_err(|e| format!("{BACKING_FILE}: {e}"))?;
    run_tool("losetup", &[LOOP_DEVICE, BACKING_FILE])?;
    fs::write(HOTPLUG_SCRIPT, hotplug_script()).map_err(|e| format!("{HOTPLUG_SCRIPT}: {e}"))?;
    fs::set_permissions(HOTPLUG_SCRIPT, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{HOTPLUG_SCRIPT}: {e}"))?;
    device_numbers(LOOP_DEVICE)
}

/// The `major:minor` of block device `path` in hex, as `stat -c '%t:%T'` prints it and blkback
/// reads `physical-device`.
fn device_numbers(path: &str) -> Result<String, String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let metadata = fs::metadata(path).map_err(|e| format!("{path}: {e}"))?;
    if !metadata.file_type().is_block_device() {
        return Err(format!("{path} is not a block device"));
    }
    let rdev = metadata.rdev();
    // Linux's encoding of dev_t (glibc's gnu_dev_major / gnu_dev_minor).
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    Ok(format!("{major:x}:{minor:x}"))
}

/// The backend directory of the domU's disk.
fn backend_dir(domain: &Domain) -> String {
    format!(
        "/local/domain/0/backend/vbd/{}/{}",
        domain.domid,
        blk::DEVID
    )
}

/// The steps after `xl_create`.
fn run_with(steps: &mut Steps, domain: &Domain, device: &str) {
    steps.step("domu_ready", |out| {
        domain.unpause()?;
        domain.wait_for_key(exchange::READY, "1", READY_TIMEOUT)?;
        out.out(format_args!("the domU wrote {} = 1", exchange::READY));
        Ok(())
    });
    let backend = backend_dir(domain);
    steps.step("blk_backend_attached", |out| {
        let key = |name: &str| domain.read_path(&format!("{backend}/{name}"));
        let expect = |name: &str, want: &str| -> Result<(), String> {
            let got = key(name)?;
            if got == want {
                Ok(())
            } else {
                Err(format!("{backend}/{name} is {got:?}, expected {want:?}"))
            }
        };
        expect("params", LOOP_DEVICE)?;
        expect("physical-device", device)?;
        expect("hotplug-status", "connected")?;
        expect("frontend-id", &domain.domid.to_string())?;
        expect(
            "frontend",
            &format!("/local/domain/{}/device/vbd/{}", domain.domid, blk::DEVID),
        )?;
        let seen = domain.read(blk::SEEN_BACKEND)?;
        if seen != backend {
            return Err(format!(
                "the domU read backend {seen:?} from its frontend directory, expected {backend:?}"
            ));
        }
        out.out(format_args!(
            "{backend}: physical-device {device}, hotplug-status connected, state {}; the domU found it",
            key("state")?
        ));
        domain.write(blk::CHECKED, "1")
    });
    steps.step("blk_backing_holds_domu_pattern", |out| {
        let written = domain.wait_for_value(blk::WRITTEN, WRITTEN_TIMEOUT, |_| true)?;
        let (bytes, digest) = bulk::parse_written(&written)
            .ok_or_else(|| format!("{} = {written:?}: not <bytes> <digest>", blk::WRITTEN))?;
        let disk = fs::read(BACKING_FILE).map_err(|e| format!("{BACKING_FILE}: {e}"))?;
        if bytes != disk.len() as u64 {
            return Err(format!(
                "the domU read back {bytes} bytes, the backing file holds {}",
                disk.len()
            ));
        }
        if let Some(at) = blk::first_mismatch(&disk, blk::DOMU_SEED, 0) {
            return Err(format!(
                "byte {at} (sector {}) of {BACKING_FILE} is {:#04x}, the domU's pattern has {:#04x}",
                at / blk::SECTOR_SIZE as u64,
                disk[at as usize],
                blk::pattern_byte(blk::DOMU_SEED, at)
            ));
        }
        let mut ours = bulk::Digest::new();
        ours.update(&disk);
        if ours.value() != digest {
            return Err(format!(
                "the backing file's digest is {:016x}, the domU read back {digest:016x}",
                ours.value()
            ));
        }
        out.out(format_args!(
            "{BACKING_FILE}: {bytes} bytes of the domU's pattern, digest {digest:016x} as the domU read back"
        ));
        Ok(())
    });
    steps.step("blk_detach", |out| {
        let domid = domain.domid.to_string();
        let start = Instant::now();
        // libxl waits up to 10 s for the backend to close, then fails.
        let detached = run_tool("xl", &["block-detach", &domid, blk::VDEV]);
        let took = start.elapsed();
        if let Err(error) = detached {
            let state = |path: String| {
                domain
                    .read_path(&format!("{path}/state"))
                    .unwrap_or_else(|e| e)
            };
            return Err(format!(
                "{error} (after {:.1} s; backend state {}, frontend state {})",
                took.as_secs_f64(),
                state(backend.clone()),
                state(format!(
                    "/local/domain/{}/device/vbd/{}",
                    domain.domid,
                    blk::DEVID
                ))
            ));
        }
        let list = run_tool("xl", &["block-list", &domid])?;
        // A header line, then one line per disk.
        if let Some(disk) = list.lines().skip(1).find(|line| !line.trim().is_empty()) {
            return Err(format!("xl block-list still lists {disk:?}"));
        }
        if domain.read_path(&backend).is_ok() {
            return Err(format!("{backend} is still there"));
        }
        let frontend = format!("device/vbd/{}", blk::DEVID);
        if domain.read(&frontend).is_ok() {
            return Err(format!("the domU's {frontend} is still there"));
        }
        hotplug_removed(&backend)?;
        out.out(format_args!(
            "xl block-detach took {} ms; xl block-list is empty, both directories are gone, the script's remove ran",
            took.as_millis()
        ));
        Ok(())
    });
    powered_off(steps, domain);
}

/// Whether the hotplug script's `remove` ran for the backend directory `backend`.
fn hotplug_removed(backend: &str) -> Result<(), String> {
    let removed = fs::read_to_string(REMOVED_LOG).unwrap_or_default();
    let relative = backend.trim_start_matches("/local/domain/0/");
    if removed.lines().any(|line| line == relative) {
        Ok(())
    } else {
        Err(format!(
            "the hotplug script's remove never ran for {relative} (it recorded {removed:?})"
        ))
    }
}
