//! Generation parameters in images (A1111, ComfyUI, NovelAI, InvokeAI, Fooocus): read and write.
