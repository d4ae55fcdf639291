//! `xen-dom0-tests blk-domu <domu options>`: the dom0 half of the block-device run
//! ([`exchange::blk`]). Linux's blkback (loaded by `/init`) serves the domU a disk: a loop device
//! over a file in dom0's tmpfs, filled with dom0's pattern, named to blkback by a hotplug script
//! of our own (Debian's `block` script needs bash).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use xen_testbed_protocol::exchange::{self, blk};
use xen_testbed_protocol::{Reporter, Stdout};

use crate::domu::{ConsoleForwarder, Domain, READY_TIMEOUT, Spec, Steps, powered_off};
use crate::run_tool;

/// The file backing the disk, in dom0's tmpfs.
const BACKING_FILE: &str = "/tmp/xentest-disk.img";
/// The loop device over it.
const LOOP_DEVICE: &str = "/dev/loop0";
/// The hotplug script libxl runs for the disk.
const HOTPLUG_SCRIPT: &str = "/tmp/xentest-block-hotplug";
/// Where the script records each `remove` (the backend path, a line each).
const REMOVED_LOG: &str = "/tmp/xentest-hotplug-removed";
/// How long dom0 waits for libxl to remove the backend directory of a domain that is gone.
const REMOVED_TIMEOUT: Duration = Duration::from_secs(10);

/// libxl runs it as `<script> add|remove` with `XENBUS_PATH=backend/vbd/<domid>/<devid>`:
/// `add` names the device of `params` to blkback as `major:minor` in hex (blkback waits for
/// `physical-device`) and reports success in `hotplug-status`; `remove` only records the call.
fn hotplug_script() -> String {
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
    powered_off(steps, domain);
    steps.step("blk_backend_removed", |out| {
        let start = Instant::now();
        while domain.read_path(&backend).is_ok() {
            if start.elapsed() > REMOVED_TIMEOUT {
                return Err(format!(
                    "{backend} still there {} s after the domain is gone",
                    REMOVED_TIMEOUT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let removed = fs::read_to_string(REMOVED_LOG).unwrap_or_default();
        let relative = backend.trim_start_matches("/local/domain/0/");
        if !removed.lines().any(|line| line == relative) {
            return Err(format!(
                "the hotplug script's remove never ran for {relative} (it recorded {removed:?})"
            ));
        }
        out.out(format_args!(
            "{backend} removed and the hotplug script's remove ran"
        ));
        Ok(())
    });
}
