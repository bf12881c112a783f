//! Kernel tests (root): the proxy applied through real `nft` in namespaces the tests create.
