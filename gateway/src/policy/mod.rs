//! The policy language, compiler and reference classifier. Pure: no aya, no kernel.
