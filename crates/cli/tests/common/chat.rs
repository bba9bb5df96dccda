//! The default model loaded once per test binary, with its tokenizer and
//! chat template, for the tests that drive the engine directly.

use cria_engine::Loaded;
use cria_model::Model;
use cria_prompt::{tokenize_prompt, ChatTemplate, Message};
use cria_tokenizer::Tokenizer;
use std::sync::{Arc, OnceLock};

pub struct Chat {
    pub model: Arc<Model>,
    pub tok: Arc<Tokenizer>,
    pub template: ChatTemplate,
}

/// The default model, loaded on first use and shared by the binary's tests.
pub fn chat() -> &'static Chat {
    static F: OnceLock<Chat> = OnceLock::new();
    F.get_or_init(|| {
        let loaded = Loaded::open(&super::default_model()).unwrap();
        let template =
            ChatTemplate::load(loaded.model.file().metadata(), &loaded.tokenizer, None).unwrap();
        Chat {
            model: Arc::new(loaded.model),
            tok: Arc::new(loaded.tokenizer),
            template,
        }
    })
}

impl Chat {
    /// One user message through the model's chat template, tokenized, with
    /// the assistant's turn opened.
    pub fn prompt(&self, user: &str) -> Vec<u32> {
        let rendered = self
            .template
            .render(&[Message::new("user", user)], true)
            .unwrap();
        tokenize_prompt(&self.tok, &rendered).unwrap()
    }
}
