//! What is kept of a filelist's (or findings CSV's) images once they were read, for sets larger
//! than memory: per image its labels, who it shows, where its line is and a digest of its
//! pixels, never the pixels. [`Catalog::read`] decodes images again and refuses one that is no
//! longer the image first read.

use std::io::{BufRead, Seek, SeekFrom};

use ndarray::{Array4, ArrayView4};
use sha2::{Digest as _, Sha256};

use super::filelist::{Row, Source};
use super::{DataError, Dataset, Images};
use crate::identity::Identity;

/// Bytes of SHA-256 kept per image to recognise its pixels.
const DIGEST_BYTES: usize = 16;

/// Where an image's line is in the filelist.
#[derive(Clone, Copy, Debug)]
struct Place {
    offset: u64,
    line: usize,
}

/// The images of a filelist, read once: labels, identities, places and pixel digests.
#[derive(Debug)]
pub struct Catalog {
    source: Source,
    /// Width and height of every image, set by the first.
    pub(super) size: Option<(u32, u32)>,
    num_labels: usize,
    multi_label: bool,
    label_names: Vec<String>,
    places: Vec<Place>,
    labels: Vec<f32>,
    identities: Vec<Option<Identity>>,
    digests: Vec<[u8; DIGEST_BYTES]>,
}

/// The truncated SHA-256 of an image's pixels.
pub(crate) fn digest(pixels: &[u8]) -> [u8; DIGEST_BYTES] {
    let full = Sha256::digest(pixels);
    let mut short = [0; DIGEST_BYTES];
    short.copy_from_slice(&full[..DIGEST_BYTES]);
    short
}

impl Catalog {
    /// An empty catalog of the filelist `source`, room for `len` images.
    pub(super) fn new(
        source: Source,
        len: usize,
        num_labels: usize,
        multi_label: bool,
        label_names: Vec<String>,
    ) -> Catalog {
        Catalog {
            source,
            size: None,
            num_labels,
            multi_label,
            label_names,
            places: Vec::with_capacity(len),
            labels: Vec::with_capacity(len * num_labels),
            identities: Vec::with_capacity(len),
            digests: Vec::with_capacity(len),
        }
    }

    /// Records `row`, who it shows and its CHW pixels.
    pub(super) fn push(&mut self, row: &Row, identity: Option<Identity>, pixels: &[u8]) {
        self.places.push(Place { offset: row.offset, line: row.line });
        self.labels.extend(&row.labels);
        self.identities.push(identity);
        self.digests.push(digest(pixels));
    }

    /// The names of the labels, in label order; empty where the file names none.
    pub fn label_names(&self) -> &[String] {
        &self.label_names
    }

    /// Channels, height and width of every image.
    fn shape(&self) -> (usize, usize, usize) {
        let (width, height) = self.size.unwrap_or_default();
        (self.source.opts.channels, height as usize, width as usize)
    }

    /// `pixels` (whole images, CHW each) as a batch `[n, C, H, W]`.
    pub(super) fn view<'a>(&self, pixels: &'a [u8]) -> ArrayView4<'a, u8> {
        let (c, h, w) = self.shape();
        let n = pixels.len() / (c * h * w).max(1);
        ArrayView4::from_shape((n, c, h, w), pixels).expect("whole CHW images of one size")
    }

    /// The set in memory, with its pixels `images` (in filelist order).
    pub(super) fn into_dataset(self, images: Vec<u8>) -> Dataset {
        let (channels, height, width) = self.shape();
        Dataset {
            name: self.source.list.display().to_string(),
            channels,
            height,
            width,
            num_labels: self.num_labels,
            multi_label: self.multi_label,
            images,
            labels: self.labels,
            allows_hflip: self.source.opts.allows_hflip,
            identities: self.identities,
            label_names: self.label_names,
        }
    }

    /// Decodes image `i` again from `reader` (the filelist) onto `out`, failing unless its
    /// line, labels, identity and pixels are those read first.
    fn reread(
        &self,
        i: usize,
        reader: &mut (impl BufRead + Seek),
        out: &mut Vec<u8>,
    ) -> Result<(), DataError> {
        let Place { offset, line } = self.places[i];
        let list = &self.source.list;
        let changed = |what: &str| {
            DataError::line(
                list,
                line,
                format!(
                    "{what} changed since the set was first read; nothing is drawn from an image the gate has not seen (restore it, or start a new run)"
                ),
            )
        };
        let file = format!("the {}", self.source.kind());
        reader.seek(SeekFrom::Start(offset)).map_err(|e| DataError::io(list, e))?;
        let row = self
            .source
            .rows(&mut *reader, line - 1, offset)
            .next()
            .ok_or_else(|| changed(&file))??;
        if row.line != line || row.labels != self.label(i) {
            return Err(changed(&file));
        }
        let start = out.len();
        let mut size = self.size;
        let identity = self.source.pixels(&row, &mut size, out)?;
        if identity != self.identities[i] {
            return Err(changed(&format!("who {} shows", row.path.display())));
        }
        if digest(&out[start..]) != self.digests[i] {
            return Err(changed(&row.path.display().to_string()));
        }
        Ok(())
    }
}

impl Images for Catalog {
    fn name(&self) -> String {
        self.source.list.display().to_string()
    }

    fn len(&self) -> usize {
        self.places.len()
    }

    fn label(&self, i: usize) -> &[f32] {
        &self.labels[i * self.num_labels..(i + 1) * self.num_labels]
    }

    fn identities(&self) -> &[Option<Identity>] {
        &self.identities
    }

    fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        for (i, digest) in self.digests.iter().enumerate() {
            hasher.update(digest);
            hasher.update(super::labels_bytes(self.label(i)));
        }
        crate::bundle::hex(&hasher.finalize())
    }

    /// Decodes the images again, each checked against what was first read.
    fn read(&self, indices: &[usize]) -> Result<Array4<u8>, DataError> {
        let mut reader = self.source.open()?;
        let (c, h, w) = self.shape();
        let mut pixels = Vec::with_capacity(indices.len() * c * h * w);
        for &i in indices {
            self.reread(i, &mut reader, &mut pixels)?;
        }
        Ok(Array4::from_shape_vec((indices.len(), c, h, w), pixels)
            .expect("whole CHW images of one size"))
    }
}
