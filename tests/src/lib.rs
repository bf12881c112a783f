//! Test support: images, containerd, skerryd.
