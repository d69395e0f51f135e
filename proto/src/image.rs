//! Images as the protocol carries them ([`v1::DockerImage`]) and as the rest of Weir
//! matches and stores them ([`ImageInfo`]): one conversion for workers and masters.

use crate::v1;
use weir_common::image::ImageInfo;

impl From<&ImageInfo> for v1::DockerImage {
    fn from(i: &ImageInfo) -> Self {
        Self {
            id: i.id.clone(),
            tags: i.tags.clone(),
            digests: i.digests.clone(),
            size_bytes: i.size_bytes,
        }
    }
}

impl From<&v1::DockerImage> for ImageInfo {
    fn from(i: &v1::DockerImage) -> Self {
        Self {
            id: i.id.clone(),
            tags: i.tags.clone(),
            digests: i.digests.clone(),
            size_bytes: i.size_bytes,
        }
    }
}
