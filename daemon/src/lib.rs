//! skerryd
