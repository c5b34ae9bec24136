//! Paged (unified) memory (`bnb_paged_alloc`, `bnb_paged_free`, `bnb_paged_prefetch`): memory
//! that the host and the context's device both address, migrated page by page on demand. On the
//! CPU backend it is ordinary host memory and prefetching does nothing.
use std::marker::PhantomData;
use std::mem::size_of;
use std::ops::{Deref, DerefMut};
use std::ptr::{self, NonNull};

use bnb_sys as sys;

use crate::context::{product, to_i64, Context};
use crate::error::{check, Error, Result};
use crate::types::Element;

/// `len` elements of paged memory, zero-filled, freed on drop. It reads and writes as a slice
/// from the host; every call of this crate has finished on the device when it returns (the
/// prefetches too), so host access never races with the backend. Its slices go to this
/// context's calls as they are (no staging copy on a GPU backend): optimizer state kept here
/// stays put between steps and migrates page by page.
pub struct PagedBuffer<'c, T: Element> {
    ctx: &'c Context,
    ptr: NonNull<T>,
    len: usize,
    _owns: PhantomData<T>,
}

// SAFETY: the buffer owns its memory as a Vec would; the context it borrows is Sync.
unsafe impl<T: Element> Send for PagedBuffer<'_, T> {}
unsafe impl<T: Element> Sync for PagedBuffer<'_, T> {}

impl Context {
    /// `len` elements of paged memory, all zero. `len` 0 is an error, as in the C API.
    pub fn paged_alloc<T: Element>(&self, len: usize) -> Result<PagedBuffer<'_, T>> {
        let bytes = product("len * element size", len, size_of::<T>())?;
        let mut raw = ptr::null_mut();
        // SAFETY: an out-parameter; the memory is freed by PagedBuffer's drop.
        unsafe { check(sys::bnb_paged_alloc(self.as_raw(), to_i64("bytes", bytes)?, &mut raw))? };
        let ptr = NonNull::new(raw.cast::<T>())
            .ok_or_else(|| Error::invalid("bnb_paged_alloc returned NULL".to_string()))?;
        // Owned from here on, so a failure below still frees it.
        let buffer = PagedBuffer {
            ctx: self,
            ptr,
            len,
            _owns: PhantomData,
        };
        if ptr.as_ptr().align_offset(std::mem::align_of::<T>()) != 0 {
            return Err(Error::invalid("bnb_paged_alloc returned misaligned memory".to_string()));
        }
        // The device reads it in place: calls pass its slices without staging copies.
        self.register_paged(ptr.as_ptr() as usize, bytes);
        // SAFETY: `bytes` bytes of host-addressable memory, not yet shared with anything. Zeros
        // are a valid value of every Element type, so the slice views below are initialised.
        unsafe { ptr::write_bytes(ptr.as_ptr().cast::<u8>(), 0, bytes) };
        Ok(buffer)
    }
}

impl<T: Element> PagedBuffer<'_, T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address the library sees (for `bnb_sys` calls; the buffer keeps owning it).
    pub fn as_ptr(&self) -> *const T {
        self.ptr.as_ptr()
    }

    pub fn as_mut_ptr(&mut self) -> *mut T {
        self.ptr.as_ptr()
    }

    /// Moves the pages to the context's device ahead of use, and waits for the move.
    pub fn prefetch_to_device(&self) -> Result<()> {
        self.prefetch(1)
    }

    /// Moves the pages back to the host, and waits for the move.
    pub fn prefetch_to_host(&self) -> Result<()> {
        self.prefetch(0)
    }

    fn prefetch(&self, to_device: i32) -> Result<()> {
        let bytes = to_i64("bytes", self.len * size_of::<T>())?;
        // SAFETY: the whole live allocation; the wait keeps host access free of races.
        unsafe {
            check(sys::bnb_paged_prefetch(
                self.ctx.as_raw(),
                self.ptr.as_ptr().cast(),
                bytes,
                to_device,
                ptr::null_mut(),
            ))?;
        }
        self.ctx.sync()
    }
}

impl<T: Element> Deref for PagedBuffer<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `len` initialised elements, owned by self, no device work in flight.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Element> DerefMut for PagedBuffer<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as for deref, and `&mut self` makes the view unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Element> Drop for PagedBuffer<'_, T> {
    fn drop(&mut self) {
        self.ctx.unregister_paged(self.ptr.as_ptr() as usize);
        // SAFETY: allocated by bnb_paged_alloc on this context, freed once, here.
        unsafe {
            sys::bnb_paged_free(self.ctx.as_raw(), self.ptr.as_ptr().cast());
        }
    }
}

impl<T: Element + std::fmt::Debug> std::fmt::Debug for PagedBuffer<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagedBuffer").field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::Context;

    #[test]
    fn slices_of_paged_buffers_are_recognised_until_the_buffer_goes() {
        let ctx = Context::new().unwrap();
        let buffer = ctx.paged_alloc::<f32>(100).unwrap();
        let at = buffer.as_ptr();
        assert!(ctx.in_paged(at, 400));
        assert!(ctx.in_paged(buffer[10..20].as_ptr(), 40));
        assert!(!ctx.in_paged(buffer[10..].as_ptr(), 400), "running past the end");
        let ordinary = vec![0f32; 100];
        assert!(!ctx.in_paged(ordinary.as_ptr(), 400));
        let other = Context::new().unwrap();
        assert!(!other.in_paged(at, 400), "another context's buffer is staged");
        drop(buffer);
        assert!(!ctx.in_paged(at, 400));
    }
}
