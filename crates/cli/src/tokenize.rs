//! `mixtral tokenize` and `mixtral detokenize`: the tokenizer on its own, as JSON.

use std::path::PathBuf;

/// Arguments of `mixtral tokenize`.
#[derive(clap::Args)]
pub(crate) struct TokenizeArgs {
    /// Model directory (only its tokenizer.json is read) or GGUF file (only its metadata).
    #[arg(long, short = 'm', env = "MIXTRAL_MODEL")]
    model: Option<PathBuf>,
    /// Text to encode (SentencePiece dummy prefix, no BOS unless --bos).
    #[arg(long, required_unless_present = "chat", conflicts_with = "chat")]
    text: Option<String>,
    /// Path of a JSON conversation file (`[{"role": "user", "content": "…"}, …]`) to render
    /// as `generate --chat` does: the model's own chat template or the `[INST]` format, as
    /// --chat-format picks.
    #[arg(long, value_name = "FILE")]
    chat: Option<PathBuf>,
    /// How --chat is rendered: `auto` (the default: the model's chat template unless it is
    /// Mixtral-Instruct's, else the mistral-common-exact `[INST]` format), `mistral` or
    /// `template`.
    #[arg(long, requires = "chat", conflicts_with = "text")]
    chat_format: Option<mixtral::ChatFormat>,
    /// Prepend BOS to --text.
    #[arg(long)]
    bos: bool,
}

/// Arguments of `mixtral detokenize`.
#[derive(clap::Args)]
pub(crate) struct DetokenizeArgs {
    /// Model directory (only its tokenizer.json is read) or GGUF file (only its metadata).
    #[arg(long, short = 'm', env = "MIXTRAL_MODEL")]
    model: Option<PathBuf>,
    /// Token ids, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    ids: Vec<u32>,
}

fn tokenizer(
    model: &Option<PathBuf>,
) -> Result<mixtral::tokenizer::Tokenizer, Box<dyn std::error::Error>> {
    Ok(mixtral::load_tokenizer(&crate::args::model_path(model)?)?)
}

pub(crate) fn tokenize(args: TokenizeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let ids = match (&args.text, &args.chat) {
        (Some(text), _) => {
            let tok = tokenizer(&args.model)?;
            let mut ids = if args.bos { vec![tok.bos_id()] } else { vec![] };
            ids.extend(tok.encode(text)?);
            ids
        }
        (None, Some(path)) => {
            let messages = crate::args::read_chat(path)?;
            let model = crate::args::model_path(&args.model)?;
            let tok = mixtral::load_tokenizer(&model)?;
            let template =
                mixtral::chat_template(&model, args.chat_format.unwrap_or_default(), Some(&tok))?;
            mixtral::encode_chat(&tok, template.as_ref(), &messages)?
        }
        (None, None) => unreachable!("clap requires --text or --chat"),
    };
    println!("{}", serde_json::json!({ "ids": ids }));
    Ok(())
}

pub(crate) fn detokenize(args: DetokenizeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let text = tokenizer(&args.model)?.decode(&args.ids)?;
    println!("{}", serde_json::json!({ "text": text }));
    Ok(())
}
