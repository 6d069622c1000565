//! What a release is made of and how it is made: the source tarball, the
//! installers, the operator command's container image, the build matrix, the
//! workflow that runs it, and the merge of its shards.

pub mod ci;
pub mod container_image;
pub mod installers;
#[cfg(test)]
pub mod kubernetes_manifest;
pub mod merge;
pub mod plan;
pub mod previous_release;
pub mod source;
