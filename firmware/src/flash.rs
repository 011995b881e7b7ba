//! A/B update slots over NOR-flash-like memory: erased bytes read 0xFF and programming
//! can only clear bits, as on the flash pages of a microcontroller.

use vigil_core::update::slots::{Region, Slot, SlotStorage, RECORD_LEN};

/// Bytes reserved for each commit record (one small flash page).
pub const RECORD_PAGE: usize = 128;

/// Why flash storage refused an access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FlashError {
    /// The access falls outside the region.
    OutOfRange,
}

/// Two payload slots and two record pages laid out in one memory region:
/// `[slot A][slot B][record A][record B]`.
#[derive(Debug)]
pub struct FlashSlots<'m> {
    memory: &'m mut [u8],
    capacity: usize,
}

impl<'m> FlashSlots<'m> {
    /// Slots over `memory`; each slot gets half of what the record pages leave.
    pub fn new(memory: &'m mut [u8]) -> Self {
        let capacity = memory.len().saturating_sub(2 * RECORD_PAGE) / 2;
        FlashSlots { memory, capacity }
    }

    /// Bytes of memory needed for slots of `capacity` bytes.
    pub const fn memory_for(capacity: usize) -> usize {
        2 * capacity + 2 * RECORD_PAGE
    }

    fn range(&self, region: Region) -> (usize, usize) {
        let c = self.capacity;
        match region {
            Region::Slot(Slot::A) => (0, c),
            Region::Slot(Slot::B) => (c, c),
            Region::Record(Slot::A) => (2 * c, RECORD_LEN),
            Region::Record(Slot::B) => (2 * c + RECORD_PAGE, RECORD_LEN),
        }
    }

    fn span(&self, region: Region, offset: u32, len: usize) -> Result<core::ops::Range<usize>, FlashError> {
        let (start, size) = self.range(region);
        let offset = offset as usize;
        if offset > size || len > size - offset {
            return Err(FlashError::OutOfRange);
        }
        Ok(start + offset..start + offset + len)
    }
}

impl SlotStorage for FlashSlots<'_> {
    type Error = FlashError;

    fn slot_capacity(&self) -> u32 {
        self.capacity as u32
    }

    fn erase(&mut self, region: Region) -> Result<(), FlashError> {
        let (start, size) = self.range(region);
        self.memory[start..start + size].fill(0xFF);
        Ok(())
    }

    fn write(&mut self, region: Region, offset: u32, data: &[u8]) -> Result<(), FlashError> {
        let span = self.span(region, offset, data.len())?;
        for (cell, byte) in self.memory[span].iter_mut().zip(data) {
            *cell &= byte;
        }
        Ok(())
    }

    fn read(&mut self, region: Region, offset: u32, buf: &mut [u8]) -> Result<usize, FlashError> {
        let (_, size) = self.range(region);
        let n = buf.len().min(size.saturating_sub(offset as usize));
        let span = self.span(region, offset, n)?;
        buf[..n].copy_from_slice(&self.memory[span]);
        Ok(n)
    }

    fn sync(&mut self) -> Result<(), FlashError> {
        Ok(())
    }
}
