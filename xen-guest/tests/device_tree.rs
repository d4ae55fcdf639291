//! The `hypervisor` node, in device trees laid out as libxl writes a domU's.
#![cfg(feature = "fdt")]

use xen_guest::BootInfoError;
use xen_guest::dt::{EventInterrupt, Hypervisor, Region};

/// A flattened device tree (version 17) of a root with two-cell addresses and sizes and one
/// child node with `props`.
fn fdt(child: &str, props: &[(&str, Vec<u8>)]) -> Vec<u8> {
    fdt_with_cells((2, 2), child, props)
}

/// The same with the root's `#address-cells` and `#size-cells`.
fn fdt_with_cells(root_cells: (u32, u32), child: &str, props: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut structure = Vec::new();
    let mut strings = Vec::new();
    let word = |out: &mut Vec<u8>, w: u32| out.extend_from_slice(&w.to_be_bytes());
    let pad = |out: &mut Vec<u8>| {
        while out.len() % 4 != 0 {
            out.push(0);
        }
    };
    let mut prop = |structure: &mut Vec<u8>, name: &str, value: &[u8]| {
        let offset = strings.len() as u32;
        strings.extend_from_slice(name.as_bytes());
        strings.push(0);
        word(structure, 3);
        word(structure, value.len() as u32);
        word(structure, offset);
        structure.extend_from_slice(value);
        pad(structure);
    };
    word(&mut structure, 1);
    structure.extend_from_slice(b"\0\0\0\0");
    prop(
        &mut structure,
        "#address-cells",
        &root_cells.0.to_be_bytes(),
    );
    prop(&mut structure, "#size-cells", &root_cells.1.to_be_bytes());
    word(&mut structure, 1);
    structure.extend_from_slice(child.as_bytes());
    structure.push(0);
    pad(&mut structure);
    for (name, value) in props {
        prop(&mut structure, name, value);
    }
    word(&mut structure, 2);
    word(&mut structure, 2);
    word(&mut structure, 9);
    let header = 40;
    let reserve = 16;
    let off_struct = header + reserve;
    let off_strings = off_struct + structure.len();
    let total = off_strings + strings.len();
    let mut blob = Vec::new();
    for w in [
        0xd00d_feed,
        total as u32,
        off_struct as u32,
        off_strings as u32,
        header as u32,
        17,
        16,
        0,
        strings.len() as u32,
        structure.len() as u32,
    ] {
        word(&mut blob, w);
    }
    blob.extend_from_slice(&[0; 16]);
    blob.extend_from_slice(&structure);
    blob.extend_from_slice(&strings);
    blob
}

fn cells(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

#[test]
fn a_domu_hypervisor_node_reads_back() {
    let blob = fdt(
        "hypervisor@38000000",
        &[
            ("compatible", b"xen,xen-4.17\0xen,xen\0".to_vec()),
            (
                "reg",
                cells(&[0, 0x3800_0000, 0, 0x0100_0000, 0x1, 0, 0, 0x4000_0000]),
            ),
            ("interrupts", cells(&[1, 15, 0xf08])),
        ],
    );
    let node = Hypervisor::from_blob(&blob).unwrap();
    assert_eq!(node.version, Some("4.17"));
    assert_eq!(
        node.grant_table,
        Region {
            base: 0x3800_0000,
            size: 0x0100_0000
        }
    );
    assert_eq!(
        node.extended_regions().collect::<Vec<_>>(),
        [Region {
            base: 0x1_0000_0000,
            size: 0x4000_0000
        }]
    );
    assert_eq!(
        node.event_interrupt,
        EventInterrupt {
            intid: 31,
            flags: 0xf08
        }
    );
}

#[test]
fn a_node_missing_what_xen_always_writes_is_a_typed_error() {
    let reg = ("reg", cells(&[0, 0x3800_0000, 0, 0x0100_0000]));
    let compatible = ("compatible", b"xen,xen\0".to_vec());
    let ppi = ("interrupts", cells(&[1, 15, 0xf08]));
    for props in [
        vec![reg.clone(), ppi.clone()],
        vec![compatible.clone(), ppi.clone()],
        vec![compatible.clone(), reg.clone()],
        // An SPI, and a PPI number out of range.
        vec![
            compatible.clone(),
            reg.clone(),
            ("interrupts", cells(&[0, 15, 4])),
        ],
        vec![
            compatible.clone(),
            reg.clone(),
            ("interrupts", cells(&[1, 16, 4])),
        ],
        vec![compatible.clone(), reg.clone(), ("interrupts", cells(&[1]))],
    ] {
        assert!(matches!(
            Hypervisor::from_blob(&fdt("hypervisor", &props)),
            Err(BootInfoError::DeviceTree(_))
        ));
    }
    let blob = fdt("hypervisor", &[compatible, reg, ppi]);
    let node = Hypervisor::from_blob(&blob).unwrap();
    assert_eq!(node.version, None);
    assert_eq!(node.extended_regions().count(), 0);
    assert!(matches!(
        Hypervisor::from_blob(b"not a device tree"),
        Err(BootInfoError::DeviceTree(_))
    ));
}

/// One-cell addresses and sizes (a 32-bit layout) decode as well; a cell count the node's
/// ranges cannot use is a typed error, not a panic.
#[test]
fn reg_follows_the_root_s_cell_sizes() {
    let props = |reg: Vec<u8>| {
        [
            ("compatible", b"xen,xen\0".to_vec()),
            ("reg", reg),
            ("interrupts", cells(&[1, 15, 0xf08])),
        ]
    };
    let blob = fdt_with_cells(
        (1, 1),
        "hypervisor",
        &props(cells(&[0x3800_0000, 0x0100_0000, 0x4000_0000, 0x1000_0000])),
    );
    let node = Hypervisor::from_blob(&blob).unwrap();
    assert_eq!(
        node.grant_table,
        Region {
            base: 0x3800_0000,
            size: 0x0100_0000
        }
    );
    assert_eq!(
        node.extended_regions().collect::<Vec<_>>(),
        [Region {
            base: 0x4000_0000,
            size: 0x1000_0000
        }]
    );
    for root_cells in [(3, 2), (2, 0)] {
        let blob = fdt_with_cells(root_cells, "hypervisor", &props(cells(&[0; 10])));
        assert!(matches!(
            Hypervisor::from_blob(&blob),
            Err(BootInfoError::DeviceTree(_))
        ));
    }
    // A reg shorter than one range.
    let blob = fdt_with_cells((2, 2), "hypervisor", &props(cells(&[0, 0x3800_0000])));
    assert!(matches!(
        Hypervisor::from_blob(&blob),
        Err(BootInfoError::DeviceTree(_))
    ));
}
