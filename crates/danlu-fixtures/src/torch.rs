//! PyTorch files built opcode by opcode: pickles (benign and malicious), zip archives, legacy files.
