//! What a new user writes first: load a model, stream a chat answer, then a second turn in
//! the same session, and stop a generation from another thread.

use mixtral::{CancelToken, Engine, GenerateParams, Message, Prompt};

fn main() -> Result<(), mixtral::Error> {
    let model = std::env::args()
        .nth(1)
        .expect("usage: mixtral-consumer MODEL_DIR");
    let engine = Engine::load(&model)?;
    let chat = vec![Message::user("What is the capital of France?")];
    let params = engine.params().max_new_tokens(12).temperature(0.0);
    let mut generated = 0;
    for token in engine.generate(&Prompt::Chat(chat), &params)? {
        print!("{}", token?.text);
        generated += 1;
    }
    println!();
    assert_eq!(
        generated, 12,
        "the tiny random model never says EOS this early"
    );
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
