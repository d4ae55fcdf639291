//! The shared page of `xen/io/libxenvchan.h` and the ring orders it allows.
//!
//! `struct vchan_interface`, the first granted page:
//!
//! | offset | field                          |
//! |--------|--------------------------------|
//! | 0      | `left.cons`, `left.prod` (u32) |
//! | 8      | `right.cons`, `right.prod`     |
//! | 16     | `left_order`, `right_order` (u16) |
//! | 20     | `cli_live`, `srv_live`, `cli_notify`, `srv_notify` (u8) |
//! | 24     | `grants[]` (u32): the left ring's pages, then the right ring's |
//!
//! The left ring carries the client's bytes to the server, the right ring the server's to the
//! client. A ring of order 10 lives at offset 1024 of this page, one of order 11 at offset 2048,
//! one of order 12 to 20 in 2^(order - 12) pages of its own, listed in `grants[]`.

use crate::Error;
use xen_shared::PAGE_SIZE;

/// `left.cons`.
pub(crate) const LEFT_CONS: usize = 0;
/// `left.prod`.
pub(crate) const LEFT_PROD: usize = 4;
/// `right.cons`.
pub(crate) const RIGHT_CONS: usize = 8;
/// `right.prod`.
pub(crate) const RIGHT_PROD: usize = 12;
/// `left_order` (u16) and `right_order` (u16) share this word.
pub(crate) const ORDERS: usize = 16;
/// `cli_live`, `srv_live`, `cli_notify`, `srv_notify` (u8 each) share this word.
pub(crate) const FLAGS: usize = 20;
/// `cli_live`: 0 closed, 1 connected, 2 not yet connected (the server's initial value).
pub(crate) const CLI_LIVE: usize = 20;
/// `srv_live`: 0 closed, 1 connected.
pub(crate) const SRV_LIVE: usize = 21;
/// `cli_notify`: the bits the server set to ask the client for an event.
pub(crate) const CLI_NOTIFY: usize = 22;
/// `srv_notify`: the bits the client set to ask the server for an event.
pub(crate) const SRV_NOTIFY: usize = 23;
/// `grants[0]`.
pub(crate) const GRANTS: usize = 24;

/// `VCHAN_NOTIFY_WRITE`: send an event when data is written.
pub(crate) const NOTIFY_WRITE: u8 = 0x1;
/// `VCHAN_NOTIFY_READ`: send an event when data is read (space freed).
pub(crate) const NOTIFY_READ: u8 = 0x2;

/// The size of a ring: 2^order bytes, `order` in 10..=20.
///
/// 10 and 11 place the ring inside the shared page (at offsets 1024 and 2048); 12 and more give
/// it 2^(order - 12) pages of its own. 20 is libxenvchan's limit: two such rings need 512
/// grant references, which still fit the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Order(u8);

impl Order {
    /// 1 KiB, at offset 1024 of the shared page.
    pub const SMALL: Self = Self(10);
    /// 2 KiB, at offset 2048 of the shared page.
    pub const LARGE: Self = Self(11);
    /// 1 MiB in 256 pages, the largest libxenvchan allows.
    pub const MAX: Self = Self(20);

    /// The order `raw`, if vchan allows it (10..=20).
    ///
    /// # Errors
    ///
    /// [`Error::BadOrder`] if `raw` is outside 10..=20.
    pub const fn new(raw: u16) -> Result<Self, Error> {
        if raw >= Self::SMALL.0 as u16 && raw <= Self::MAX.0 as u16 {
            Ok(Self(raw as u8))
        } else {
            Err(Error::BadOrder(raw))
        }
    }

    /// The smallest order whose ring holds `bytes`, counting in pages (12 or more), as
    /// libxenvchan's `min_order` does.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] if `bytes` is more than 1 MiB.
    pub fn pages_for(bytes: usize) -> Result<Self, Error> {
        let mut order = 12u8;
        while (1usize << order) < bytes {
            order += 1;
            if order > Self::MAX.0 {
                return Err(Error::TooLarge(bytes));
            }
        }
        Ok(Self(order))
    }

    /// The order as a number.
    pub const fn get(self) -> u16 {
        self.0 as u16
    }

    /// The ring's size in bytes.
    pub const fn size(self) -> u32 {
        1 << self.0
    }

    /// Where the ring lives inside the shared page, for orders 10 and 11.
    pub const fn in_page_offset(self) -> Option<usize> {
        match self.0 {
            10 => Some(1024),
            11 => Some(2048),
            _ => None,
        }
    }

    /// How many pages of its own the ring needs (0 for a ring inside the shared page).
    pub const fn pages(self) -> usize {
        if self.0 >= 12 { 1 << (self.0 - 12) } else { 0 }
    }
}

/// The orders of a channel's two rings, checked to fit the shared page together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Orders {
    /// The left ring: client to server.
    pub left: Order,
    /// The right ring: server to client.
    pub right: Order,
}

impl Orders {
    /// Two orders, if their rings and grant list fit the shared page: not both in the page at
    /// the same offset, and the grant list (24 + 4 bytes per page) ending before any ring that
    /// lives in the page (libxenvchan's header: "must not extend into actual ring").
    ///
    /// # Errors
    ///
    /// [`Error::BadOrders`] if the two rings or the grant list collide in the shared page.
    pub const fn new(left: Order, right: Order) -> Result<Self, Error> {
        let both = Error::BadOrders {
            left: left.get(),
            right: right.get(),
        };
        if left.0 == right.0 && left.0 < 12 {
            return Err(both);
        }
        let grants_end = GRANTS + 4 * (left.pages() + right.pages());
        let limit = match (left.in_page_offset(), right.in_page_offset()) {
            (Some(a), Some(b)) => {
                if a < b {
                    a
                } else {
                    b
                }
            }
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => PAGE_SIZE,
        };
        if grants_end > limit {
            return Err(both);
        }
        Ok(Self { left, right })
    }

    /// The orders libxenvchan's server picks for rings of at least `left_min` and `right_min`
    /// bytes: both inside the shared page when they fit (1 KiB and 2 KiB, either way round),
    /// otherwise 2 KiB in the page for one that fits, and whole pages for the rest.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] if a size is more than 1 MiB.
    pub fn for_sizes(left_min: usize, right_min: usize) -> Result<Self, Error> {
        const SMALL: usize = 1 << 10;
        const LARGE: usize = 1 << 11;
        let (left, right) = if left_min <= SMALL && right_min <= LARGE {
            (Order::SMALL, Order::LARGE)
        } else if left_min <= LARGE && right_min <= SMALL {
            (Order::LARGE, Order::SMALL)
        } else if left_min <= LARGE {
            (Order::LARGE, Order::pages_for(right_min)?)
        } else if right_min <= LARGE {
            (Order::pages_for(left_min)?, Order::LARGE)
        } else {
            (Order::pages_for(left_min)?, Order::pages_for(right_min)?)
        };
        Self::new(left, right)
    }

    /// How many grant references `grants[]` holds: the left ring's pages, then the right's.
    pub const fn grant_count(self) -> usize {
        self.left.pages() + self.right.pages()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_outside_ten_to_twenty_are_refused() {
        for raw in [0, 1, 9, 21, 32, u16::MAX] {
            assert_eq!(Order::new(raw), Err(Error::BadOrder(raw)));
        }
        for raw in 10..=20 {
            assert_eq!(Order::new(raw).unwrap().get(), raw);
        }
    }

    #[test]
    fn two_rings_in_the_page_need_different_offsets() {
        let small = Order::SMALL;
        assert!(Orders::new(small, small).is_err());
        assert!(Orders::new(Order::LARGE, Order::LARGE).is_err());
        assert!(Orders::new(small, Order::LARGE).is_ok());
        let page = Order::new(12).unwrap();
        assert!(Orders::new(page, page).is_ok());
    }

    #[test]
    fn the_grant_list_may_not_run_into_a_ring_in_the_page() {
        // 256 + 0 grants end at 24 + 1024 = 1048: past a ring at 1024, before one at 2048.
        assert!(Orders::new(Order::MAX, Order::SMALL).is_err());
        assert!(Orders::new(Order::MAX, Order::LARGE).is_ok());
        let o18 = Order::new(18).unwrap();
        assert_eq!(Orders::new(o18, Order::SMALL).unwrap().grant_count(), 64);
        assert_eq!(
            Orders::new(Order::MAX, Order::MAX).unwrap().grant_count(),
            512
        );
    }

    #[test]
    fn sizes_map_to_libxenvchans_orders() {
        let pick = |l, r| {
            let o = Orders::for_sizes(l, r).unwrap();
            (o.left.get(), o.right.get())
        };
        assert_eq!(pick(0, 0), (10, 11));
        assert_eq!(pick(1024, 2048), (10, 11));
        assert_eq!(pick(2048, 1024), (11, 10));
        assert_eq!(pick(2048, 2048), (11, 12));
        assert_eq!(pick(4097, 100), (13, 11));
        assert_eq!(pick(1 << 16, 1 << 20), (16, 20));
        assert_eq!(
            Orders::for_sizes(1 << 16, (1 << 20) + 1),
            Err(Error::TooLarge((1 << 20) + 1))
        );
    }
}
