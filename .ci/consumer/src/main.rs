//! What a new user writes first: load a model, stream a chat answer, then a second turn in
//! the same session, and stop a generation from another thread.

use mixtral::{CancelToken, Engine, GenerateParams, Message, Prompt};

fn main() -> Result<(), mixtral::Error> {
    let model = std::env::args()
        .nth(1)
        .expect("usage: mixtral-consumer MODEL_DIR");
    let engine = Engine::load(&model)?;
    let mut chat = vec![Message::user("What is the capital of France?")];
    let params = engine.params().max_new_tokens(12).temperature(0.0);
    let mut session = engine.session();
    for question in ["And of Italy?", "Thanks."] {
        let mut answer = String::new();
        let mut generation = engine.generate_in(&mut session, &Prompt::Chat(chat.clone()), &params)?;
        for token in generation.by_ref() {
            let token = token?;
            print!("{}", token.text);
            answer.push_str(&token.text);
        }
        println!();
        let stats = generation.stats();
        assert_eq!(
            stats.generated_tokens, 12,
            "the tiny random model never says EOS this early"
        );
        if chat.len() > 1 {
            assert!(
                stats.prefill_tokens < stats.prompt_tokens,
                "the second turn reuses the session's cache"
            );
        }
        chat.push(Message::assistant(answer.trim()));
        chat.push(Message::user(question));
    }
    // Cancelled from another thread before it starts: it stops at once.
    let cancel = CancelToken::new();
    let other = cancel.clone();
    std::thread::spawn(move || other.cancel()).join().unwrap();
    let params = GenerateParams::default().cancel(cancel);
    match engine.generate(&Prompt::Text("Hello".into()), &params) {
        Err(e) if e.kind() == mixtral::ErrorKind::Cancelled => println!("cancelled: ok"),
        other => panic!("expected a cancel, got {:?}", other.map(|_| ())),
    }
    Ok(())
}
