//! gzip on every core, as pigz does it: the input is cut into fixed blocks,
//! each block is deflated on the rayon pool with the previous block's last
//! 32 KiB as its dictionary and ends on a byte boundary (a sync flush, RFC
//! 1951 section 3.2.4 stored block), so the pieces join into one ordinary
//! deflate stream inside one gzip member (RFC 1952). The CRC-32 of the whole
//! input is combined from the blocks' CRCs.
//!
//! The output depends only on the input, the block size and the level,
//! never on the number of threads: the same layer gives the same digest on
//! any machine.

use std::io::{self, Write};
use std::sync::mpsc;

use flate2::{Compress, Crc, FlushCompress, Status};
use rayon::prelude::*;

/// Uncompressed bytes per block.
const BLOCK: usize = 256 * 1024;
/// Deflate's window: the most a block can refer back (RFC 1951, 2.1).
const WINDOW: usize = 32 * 1024;
/// Blocks handed to the pool at once.
const BATCH: usize = 8;

/// gzip member header: magic, CM=8 (deflate), no flags, MTIME=0 (none),
/// XFL=0, OS=255 (unknown): nothing about the machine leaks in
/// (RFC 1952, 2.3.1).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// One block's work: input, its dictionary, whether it ends the stream.
struct Job {
    input: Vec<u8>,
    dictionary: Vec<u8>,
    last: bool,
}

/// One block's result.
struct Done {
    deflated: Vec<u8>,
    crc: Crc,
}

/// A gzip writer that compresses blocks in parallel on the rayon pool.
/// While one batch is compressed, the next one fills.
pub(crate) struct ParallelGzEncoder<W: Write> {
    out: W,
    level: flate2::Compression,
    /// The block being filled.
    block: Vec<u8>,
    /// Full blocks not yet handed out.
    queue: Vec<Job>,
    /// The tail of the last queued block: the next block's dictionary.
    tail: Vec<u8>,
    in_flight: Option<mpsc::Receiver<io::Result<Vec<Done>>>>,
    crc: Crc,
    started: bool,
}

impl<W: Write> ParallelGzEncoder<W> {
    /// A writer at gzip's default level 6, the level `gzip` and Go's
    /// `compress/gzip` default to.
    pub(crate) fn new(out: W) -> Self {
        ParallelGzEncoder {
            out,
            level: flate2::Compression::new(6),
            block: Vec::with_capacity(BLOCK),
            queue: Vec::with_capacity(BATCH),
            tail: Vec::new(),
            in_flight: None,
            crc: Crc::new(),
            started: false,
        }
    }

    /// Moves the filled block to the queue; hands the queue to the pool
    /// when a batch is complete.
    fn push_block(&mut self, last: bool) -> io::Result<()> {
        let input = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        let dictionary = std::mem::take(&mut self.tail);
        self.tail = input[input.len().saturating_sub(WINDOW)..].to_vec();
        self.queue.push(Job {
            input,
            dictionary,
            last,
        });
        if self.queue.len() == BATCH || last {
            self.submit()?;
        }
        Ok(())
    }

    fn submit(&mut self) -> io::Result<()> {
        self.collect()?;
        let jobs = std::mem::replace(&mut self.queue, Vec::with_capacity(BATCH));
        let level = self.level;
        let (tx, rx) = mpsc::sync_channel(1);
        rayon::spawn(move || {
            let done = jobs
                .into_par_iter()
                .map(|job| deflate_block(job, level))
                .collect::<io::Result<Vec<_>>>();
            // The encoder may have been dropped after an error.
            let _ = tx.send(done);
        });
        self.in_flight = Some(rx);
        Ok(())
    }

    /// Waits for the batch in flight and writes it out.
    fn collect(&mut self) -> io::Result<()> {
        let Some(rx) = self.in_flight.take() else {
            return Ok(());
        };
        let done = rx
            .recv()
            .map_err(|_| io::Error::other("gzip worker vanished"))??;
        if !self.started {
            self.out.write_all(&HEADER)?;
            self.started = true;
        }
        for block in done {
            self.out.write_all(&block.deflated)?;
            self.crc.combine(&block.crc);
        }
        Ok(())
    }

    /// Compresses what is left, writes the trailer (CRC-32, length mod
    /// 2^32) and returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        // The last block always exists, empty if need be, and carries
        // BFINAL.
        self.push_block(true)?;
        self.collect()?;
        self.out.write_all(&self.crc.sum().to_le_bytes())?;
        self.out.write_all(&self.crc.amount().to_le_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == BLOCK {
            self.push_block(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Partial blocks stay: cutting them would make the output depend
        // on when the caller flushed.
        self.out.flush()
    }
}

fn deflate_block(job: Job, level: flate2::Compression) -> io::Result<Done> {
    // Raw deflate (no zlib wrapper): the gzip member holds the header.
    let mut z = Compress::new(level, false);
    if !job.dictionary.is_empty() {
        z.set_dictionary(&job.dictionary)
            .map_err(io::Error::other)?;
    }
    let flush = if job.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(job.input.len() / 2 + 1024);
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let consumed = z.total_in() as usize;
        let status = z
            .compress_vec(&job.input[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = z.total_in() as usize == job.input.len();
        match status {
            Status::StreamEnd => break,
            // zlib: a flush is complete when output space is left over
            // after all input was taken (zlib.h, deflate()).
            Status::Ok | Status::BufError if all_in && !job.last && out.len() < out.capacity() => {
                break
            }
            _ => {}
        }
    }
    let mut crc = Crc::new();
    crc.update(&job.input);
    Ok(Done { deflated: out, crc })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn gzip(data: &[u8], chunk: usize) -> Vec<u8> {
        let mut z = ParallelGzEncoder::new(Vec::new());
        for piece in data.chunks(chunk.max(1)) {
            z.write_all(piece).unwrap();
        }
        z.finish().unwrap()
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        // A single-member decoder: the output must be one gzip member.
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn round_trips_at_every_size() {
        let mut data = Vec::new();
        let mut x = 1u32;
        while data.len() < 3 * BLOCK + 12345 {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            // Compressible: a small alphabet with repeats.
            data.extend_from_slice(format!("line {} {}\n", x % 97, x % 13).as_bytes());
        }
        for len in [0, 1, 1000, BLOCK - 1, BLOCK, BLOCK + 1, data.len()] {
            let gz = gzip(&data[..len], 4096);
            assert_eq!(gunzip(&gz), &data[..len], "length {len}");
        }
        // Batches: more than BATCH blocks.
        let big: Vec<u8> = data
            .iter()
            .cycle()
            .take(BATCH * BLOCK * 2 + 77)
            .copied()
            .collect();
        assert_eq!(gunzip(&gzip(&big, 100_000)), big);
    }

    #[test]
    fn output_does_not_depend_on_write_sizes() {
        let data: Vec<u8> = (0..(2 * BLOCK + 999)).map(|i| (i % 251) as u8).collect();
        assert_eq!(gzip(&data, 1), gzip(&data, 65536));
        assert_eq!(gzip(&data, 7), gzip(&data, data.len()));
    }
}
