//! The CEL environment of Kubernetes (the standard library with the strings,
//! lists and math extensions) and a per-thread cache of compiled programs,
//! shared by validating admission policies and CRD validation rules.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

/// Compiled programs kept per thread (the CEL types are not shared across
/// threads); a thread's cache is dropped whole when it grows past this.
const MAX_CACHED_PROGRAMS: usize = 2048;

thread_local! {
    static ENV: Result<Arc<cel::Env>, String> = build_env();
    static PROGRAMS: RefCell<HashMap<String, Rc<cel::Program>>> = RefCell::new(HashMap::new());
}

/// The CEL environment of Kubernetes: the standard library with the
/// strings, lists and math extensions.
fn build_env() -> Result<Arc<cel::Env>, String> {
    let mut env = cel::Env::stdlib();
    for ext in [
        cel::extensions::strings as fn(&mut cel::Env) -> _,
        cel::extensions::lists,
        cel::extensions::math,
    ] {
        env.add_extension(ext).map_err(|e| e.to_string())?;
    }
    Ok(Arc::new(env))
}

/// This thread's environment.
pub fn env() -> Result<Arc<cel::Env>, String> {
    ENV.with(Clone::clone)
}

/// `expression` compiled, from this thread's cache when it was seen before.
pub fn program(env: &cel::Env, expression: &str) -> Result<Rc<cel::Program>, String> {
    if let Some(p) = PROGRAMS.with(|c| c.borrow().get(expression).cloned()) {
        return Ok(p);
    }
    let compiled = Rc::new(env.compile(expression).map_err(|e| e.to_string())?);
    PROGRAMS.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= MAX_CACHED_PROGRAMS {
            c.clear();
        }
        c.insert(expression.to_owned(), compiled.clone());
    });
    Ok(compiled)
}

/// Why an expression cannot be compiled, for validating policies on write.
pub fn compile_error(expression: &str) -> Option<String> {
    match env() {
        Ok(env) => program(&env, expression).err(),
        Err(e) => Some(e),
    }
}
