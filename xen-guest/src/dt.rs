//! The Arm boot protocol's Xen part: the device tree's `hypervisor` node (`compatible =
//! "xen,xen-<version>", "xen,xen"`), which Xen (dom0) or libxl (domU) writes: the guest-physical
//! region where the guest maps its grant table, the unused regions it may map foreign pages
//! into (Xen 4.17 and later: "extended regions"), and the PPI that signals event channels.
//!
//! Nothing here allocates: a kernel without a heap reads the node too.

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
    /// The event-channel interrupt.
    pub event_interrupt: EventInterrupt,
    /// `reg`'s ranges after the first, still encoded.
    more_regions: Cells<'a>,
}

/// `reg` ranges as the device tree encodes them: big-endian cells, an address of
/// `address_cells` then a size of `size_cells` (each 1 or 2 cells).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cells<'a> {
    bytes: &'a [u8],
    address_cells: usize,
    size_cells: usize,
}

impl<'a> Cells<'a> {
    fn regions(self) -> impl Iterator<Item = Region> + 'a {
        let read = |cells: &[u8]| {
            cells.chunks_exact(4).fold(0u64, |value, cell| {
                value << 32 | u64::from(u32::from_be_bytes([cell[0], cell[1], cell[2], cell[3]]))
            })
        };
        let address_bytes = 4 * self.address_cells;
        self.bytes
            .chunks_exact(4 * (self.address_cells + self.size_cells))
            .map(move |range| Region {
                base: read(&range[..address_bytes]),
                size: read(&range[address_bytes..]),
            })
    }
}

impl<'a> Hypervisor<'a> {
    /// Ranges the guest may use to map foreign or granted pages (`reg`'s ranges after the
    /// first; empty ones left out).
    pub fn extended_regions(&self) -> impl Iterator<Item = Region> + 'a {
        self.more_regions.regions().filter(|r| r.size != 0)
    }
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
        // The node is the root's child: the root's cell sizes encode its `reg`.
        let sizes = fdt
            .find_node("/")
            .ok_or(BootInfoError::DeviceTree("no root node"))?
            .cell_sizes();
        let (address_cells, size_cells) = (sizes.address_cells, sizes.size_cells);
        if !(1..=2).contains(&address_cells) || !(1..=2).contains(&size_cells) {
            return Err(BootInfoError::DeviceTree(
                "the root's #address-cells or #size-cells is not 1 or 2",
            ));
        }
        let reg = node
            .property("reg")
            .ok_or(BootInfoError::DeviceTree("the xen,xen node has no reg"))?
            .value;
        let range = 4 * (address_cells + size_cells);
        let mut regions = Cells {
            bytes: reg,
            address_cells,
            size_cells,
        }
        .regions();
        let grant_table = regions
            .next()
            .ok_or(BootInfoError::DeviceTree("the xen,xen node's reg is empty"))?;
        let more_regions = Cells {
            bytes: reg.get(range..).unwrap_or_default(),
            address_cells,
            size_cells,
        };
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
            event_interrupt,
            more_regions,
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
