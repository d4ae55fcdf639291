//! The Arm boot protocol's Xen part: the device tree's `hypervisor` node (`compatible =
//! "xen,xen-<version>", "xen,xen"`), which Xen (dom0) or libxl (domU) writes: the guest-physical
//! region where the guest maps its grant table, the unused regions it may map foreign pages
//! into (Xen 4.17 and later: "extended regions"), and the PPI that signals event channels.

use alloc::vec::Vec;

use fdt::Fdt;

use crate::BootInfoError;

/// A guest-physical address range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Its first address.
    pub base: u64,
    /// Its size in bytes.
    pub size: u64,
}

/// The event-channel upcall interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventInterrupt {
    /// The GIC interrupt ID (a PPI: 16 to 31).
    pub intid: u32,
    /// The specifier's third cell: trigger type and, for a GICv2, the CPU mask.
    pub flags: u32,
}

/// What the `hypervisor` node says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hypervisor<'a> {
    /// The release in `xen,xen-<version>` (`"4.17"`), if the node names one.
    pub version: Option<&'a str>,
    /// Where to map the grant table (`reg`'s first range).
    pub grant_table: Region,
    /// Ranges the guest may use to map foreign or granted pages (`reg`'s other ranges).
    pub extended_regions: Vec<Region>,
    /// The event-channel interrupt.
    pub event_interrupt: EventInterrupt,
}

impl<'a> Hypervisor<'a> {
    /// Reads the node from a parsed device tree.
    ///
    /// # Errors
    ///
    /// [`BootInfoError::DeviceTree`] if no node is compatible with `xen,xen` or it lacks its
    /// `reg` ranges or interrupt.
    pub fn from_fdt(fdt: &Fdt<'a>) -> Result<Self, BootInfoError> {
        let node = fdt
            .find_compatible(&["xen,xen"])
            .ok_or(BootInfoError::DeviceTree("no node compatible with xen,xen"))?;
        let version = node
            .compatible()
            .and_then(|c| c.all().find_map(|name| name.strip_prefix("xen,xen-")));
        let mut regions = node
            .reg()
            .ok_or(BootInfoError::DeviceTree("the xen,xen node has no reg"))?
            .map(|r| Region {
                base: r.starting_address as u64,
                size: r.size.unwrap_or(0) as u64,
            });
        let grant_table = regions
            .next()
            .ok_or(BootInfoError::DeviceTree("the xen,xen node's reg is empty"))?;
        let extended_regions = regions.filter(|r| r.size != 0).collect();
        let cells = node
            .property("interrupts")
            .ok_or(BootInfoError::DeviceTree(
                "the xen,xen node has no interrupts",
            ))?
            .value;
        let cell = |i: usize| {
            cells
                .get(4 * i..4 * i + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        // A GIC specifier: <type number flags>; type 1 is a PPI, whose INTID is number + 16.
        let event_interrupt = match (cell(0), cell(1), cell(2)) {
            (Some(1), Some(number), Some(flags)) if number < 16 => EventInterrupt {
                intid: number + 16,
                flags,
            },
            _ => {
                return Err(BootInfoError::DeviceTree(
                    "the xen,xen node's interrupt is not a GIC PPI",
                ));
            }
        };
        Ok(Self {
            version,
            grant_table,
            extended_regions,
            event_interrupt,
        })
    }

    /// Reads the node from the flattened device tree in `blob`.
    ///
    /// # Errors
    ///
    /// [`BootInfoError::DeviceTree`] if `blob` is not a valid flattened device tree, and those
    /// of [`from_fdt`](Self::from_fdt).
    pub fn from_blob(blob: &'a [u8]) -> Result<Self, BootInfoError> {
        let fdt = Fdt::new(blob).map_err(|_| BootInfoError::DeviceTree("not a valid FDT"))?;
        Self::from_fdt(&fdt)
    }
}
