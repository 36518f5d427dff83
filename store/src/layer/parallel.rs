//! Compression on every core: the input is cut into fixed blocks that are
//! compressed on the rayon pool, a few batches at a time, while the next
//! ones fill, then written in order. The output depends only on the input, the codec and its level,
//! never on the number of threads, so the same layer gives the same digest
//! on any machine.
//!
//! - gzip, as pigz does it: each block is deflated with the previous block's
//!   last 32 KiB as its dictionary and ends on a byte boundary (a sync flush,
//!   RFC 1951 section 3.2.4), so the pieces join into one ordinary deflate
//!   stream inside one gzip member (RFC 1952); the CRC-32 of the whole input
//!   is combined from the blocks' CRCs.
//! - zstd, as pzstd does it: each block is one independent frame; a zstd
//!   stream is any sequence of frames (RFC 8878, section 3). Blocks are 8 MiB,
//!   four times the 2 MiB window of level 3, so little ratio is lost at the
//!   cuts (1.5% on the benchmark tree against one frame).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc;

use flate2::{Compress, Crc, FlushCompress, Status};
use rayon::prelude::*;

/// Deflate's window: the most a block can refer back (RFC 1951, 2.1).
const DEFLATE_WINDOW: usize = 32 * 1024;
/// Batches compressing at once: enough to ride out a slow thread on a busy
/// machine, while memory stays at a few tens of MiB.
const IN_FLIGHT: usize = 4;

/// gzip member header: magic, CM=8 (deflate), no flags, MTIME=0 (none),
/// XFL=0, OS=255 (unknown): nothing about the machine leaks in
/// (RFC 1952, 2.3.1).
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// What to compress with.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Codec {
    /// gzip at this level (0-9).
    Gzip(u32),
    /// zstd at this level.
    Zstd(i32),
}

impl Codec {
    /// Uncompressed bytes per block.
    fn block_size(self) -> usize {
        match self {
            Codec::Gzip(_) => 256 * 1024,
            Codec::Zstd(_) => 8 * 1024 * 1024,
        }
    }

    /// Blocks handed to the pool at once (2 MiB or 8 MiB of input).
    fn batch(self) -> usize {
        match self {
            Codec::Gzip(_) => 8,
            Codec::Zstd(_) => 1,
        }
    }

    /// Bytes of the previous block a block may refer to.
    fn dictionary_size(self) -> usize {
        match self {
            Codec::Gzip(_) => DEFLATE_WINDOW,
            Codec::Zstd(_) => 0,
        }
    }
}

/// One block's work: input, its dictionary, whether it ends the stream.
struct Job {
    input: Vec<u8>,
    dictionary: Vec<u8>,
    last: bool,
}

/// One block's result.
struct Done {
    compressed: Vec<u8>,
    /// CRC-32 of the input (gzip only).
    crc: Option<Crc>,
}

/// A writer that compresses blocks in parallel on the rayon pool.
pub(crate) struct ParallelEncoder<W: Write> {
    out: W,
    codec: Codec,
    /// The block being filled.
    block: Vec<u8>,
    /// Full blocks not yet handed out.
    queue: Vec<Job>,
    /// The tail of the last queued block: the next block's dictionary.
    tail: Vec<u8>,
    /// Batches on the pool, oldest first.
    in_flight: VecDeque<mpsc::Receiver<io::Result<Vec<Done>>>>,
    crc: Crc,
    started: bool,
}

impl<W: Write> ParallelEncoder<W> {
    /// A writer compressing with `codec` into `out`.
    pub(crate) fn new(out: W, codec: Codec) -> Self {
        ParallelEncoder {
            out,
            codec,
            block: Vec::with_capacity(codec.block_size()),
            queue: Vec::with_capacity(codec.batch()),
            tail: Vec::new(),
            in_flight: VecDeque::new(),
            crc: Crc::new(),
            started: false,
        }
    }

    /// Moves the filled block to the queue; hands the queue to the pool
    /// when a batch is complete.
    fn push_block(&mut self, last: bool) -> io::Result<()> {
        let size = self.codec.block_size();
        let input = std::mem::replace(&mut self.block, Vec::with_capacity(size));
        let keep = self.codec.dictionary_size();
        let dictionary = std::mem::take(&mut self.tail);
        if keep > 0 {
            self.tail = input[input.len().saturating_sub(keep)..].to_vec();
        }
        self.queue.push(Job {
            input,
            dictionary,
            last,
        });
        if self.queue.len() == self.codec.batch() || last {
            self.submit()?;
        }
        Ok(())
    }

    fn submit(&mut self) -> io::Result<()> {
        if self.in_flight.len() == IN_FLIGHT {
            self.collect_oldest()?;
        }
        let jobs = std::mem::replace(&mut self.queue, Vec::with_capacity(self.codec.batch()));
        let codec = self.codec;
        let (tx, rx) = mpsc::sync_channel(1);
        rayon::spawn(move || {
            let done = jobs
                .into_par_iter()
                .map(|job| match codec {
                    Codec::Gzip(level) => deflate_block(job, level),
                    Codec::Zstd(level) => zstd_block(job, level),
                })
                .collect::<io::Result<Vec<_>>>();
            // The encoder may have been dropped after an error.
            let _ = tx.send(done);
        });
        self.in_flight.push_back(rx);
        Ok(())
    }

    /// Waits for the oldest batch in flight and writes it out.
    fn collect_oldest(&mut self) -> io::Result<()> {
        let Some(rx) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let done = rx
            .recv()
            .map_err(|_| io::Error::other("compression worker vanished"))??;
        if !self.started {
            if let Codec::Gzip(_) = self.codec {
                self.out.write_all(&GZIP_HEADER)?;
            }
            self.started = true;
        }
        for block in done {
            self.out.write_all(&block.compressed)?;
            if let Some(crc) = &block.crc {
                self.crc.combine(crc);
            }
        }
        Ok(())
    }

    /// Compresses what is left, writes the trailer (gzip: CRC-32 and
    /// length mod 2^32, RFC 1952 2.3.1) and returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        // gzip: the last block always exists, empty if need be, and carries
        // BFINAL. zstd: an empty frame only when there was no input at all,
        // so that the output is still a valid stream.
        let nothing_yet = !self.started && self.queue.is_empty() && self.in_flight.is_empty();
        match self.codec {
            Codec::Zstd(_) if self.block.is_empty() && !nothing_yet => {
                if !self.queue.is_empty() {
                    self.submit()?;
                }
            }
            _ => self.push_block(true)?,
        }
        while !self.in_flight.is_empty() {
            self.collect_oldest()?;
        }
        if let Codec::Gzip(_) = self.codec {
            self.out.write_all(&self.crc.sum().to_le_bytes())?;
            self.out.write_all(&self.crc.amount().to_le_bytes())?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let size = self.codec.block_size();
        let n = buf.len().min(size - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == size {
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

fn deflate_block(job: Job, level: u32) -> io::Result<Done> {
    // Raw deflate (no zlib wrapper): the gzip member holds the header.
    let mut z = Compress::new(flate2::Compression::new(level), false);
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
    Ok(Done {
        compressed: out,
        crc: Some(crc),
    })
}

fn zstd_block(job: Job, level: i32) -> io::Result<Done> {
    // One-shot compression writes the content size into the frame header
    // and no checksum: both fixed by the input alone.
    let compressed = zstd::bulk::compress(&job.input, level)?;
    Ok(Done {
        compressed,
        crc: None,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn compress(codec: Codec, data: &[u8], chunk: usize) -> Vec<u8> {
        let mut z = ParallelEncoder::new(Vec::new(), codec);
        for piece in data.chunks(chunk.max(1)) {
            z.write_all(piece).unwrap();
        }
        z.finish().unwrap()
    }

    fn decompress(codec: Codec, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match codec {
            // A single-member decoder: the output must be one gzip member.
            Codec::Gzip(_) => {
                flate2::read::GzDecoder::new(data)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Codec::Zstd(_) => out = zstd::decode_all(data).unwrap(),
        }
        out
    }

    fn sample(len: usize) -> Vec<u8> {
        let mut data = Vec::new();
        let mut x = 1u32;
        while data.len() < len {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            // Compressible: a small alphabet with repeats.
            data.extend_from_slice(format!("line {} {}\n", x % 97, x % 13).as_bytes());
        }
        data.truncate(len);
        data
    }

    #[test]
    fn round_trips_at_every_size() {
        for codec in [Codec::Gzip(6), Codec::Zstd(3)] {
            let block = codec.block_size();
            let data = sample(3 * block + 12345);
            for len in [0, 1, 1000, block - 1, block, block + 1, data.len()] {
                let packed = compress(codec, &data[..len], 4096);
                assert_eq!(decompress(codec, &packed), &data[..len], "{codec:?} {len}");
            }
        }
        // More than one batch.
        let codec = Codec::Gzip(6);
        let big = sample(IN_FLIGHT * codec.batch() * codec.block_size() * 2 + 77);
        assert_eq!(decompress(codec, &compress(codec, &big, 100_000)), big);
    }

    #[test]
    fn output_does_not_depend_on_write_sizes() {
        for codec in [Codec::Gzip(6), Codec::Zstd(3)] {
            let data = sample(2 * codec.block_size() + 999);
            let whole = compress(codec, &data, data.len());
            assert_eq!(compress(codec, &data, 7), whole, "{codec:?}");
            assert_eq!(compress(codec, &data, 65536), whole, "{codec:?}");
        }
    }
}
