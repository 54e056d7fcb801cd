//! Which SQLite library the engine calls.
//!
//! SQLite's file locks are POSIX advisory locks, owned by the process: when two copies
//! of the SQLite library in one process open the same file, closing a handle in one copy
//! drops the locks the other copy holds, and the database sees "disk I/O error" or
//! worse. A bundled SQLite inside our module would be such a second copy next to the one
//! Python's `sqlite3` module loaded. So the engine is built without a SQLite of its own
//! (libsqlite3-sys `loadable_extension`: every call goes through a table of function
//! pointers) and, at run time, fills that table from the very library Python's `_sqlite3`
//! uses. Only when that library cannot be found does it load a system SQLite, and says
//! so: that copy is then not shared with Python's `sqlite3`.

use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::OnceLock;

use libsqlite3_sys as ffi;

use super::api_table::for_each_api_symbol;
use crate::errors::{Error, Result};

/// The SQLite library the engine is bound to.
#[derive(Debug, Clone)]
pub struct SqliteLibrary {
    /// `sqlite3_libversion()` of the bound library.
    pub version: String,
    /// Where the symbols came from (a file path or a description).
    pub source: String,
    /// True when this is the library Python's `sqlite3` module uses.
    pub shared_with_python: bool,
}

static BOUND: OnceLock<std::result::Result<SqliteLibrary, String>> = OnceLock::new();

/// Binds the engine to a SQLite library, once per process; later calls return the
/// first result. `python_module` is the file of Python's `_sqlite3` extension module
/// (None when it is built into the interpreter or missing).
pub fn bind(python_module: Option<PathBuf>) -> Result<SqliteLibrary> {
    BOUND
        .get_or_init(|| bind_once(python_module).map_err(|e| e.to_string()))
        .clone()
        .map_err(Error::Configuration)
}

/// The library bound so far, if any.
pub fn bound() -> Option<SqliteLibrary> {
    BOUND.get().and_then(|r| r.as_ref().ok().cloned())
}

fn bind_once(python_module: Option<PathBuf>) -> Result<SqliteLibrary> {
    let mut tried = Vec::new();
    // 1. The library that Python's _sqlite3 loaded (or the module itself, if SQLite is
    //    linked into it), and the interpreter's own global symbols.
    for candidate in python_candidates(python_module) {
        tried.push(candidate.describe());
        if let Some(lib) = candidate.open_loaded() {
            if let Some(found) = install(lib, candidate.describe(), true)? {
                return Ok(found);
            }
        }
    }
    // 2. A system library loaded by us: not shared with Python's sqlite3.
    for name in system_names() {
        tried.push(name.to_string());
        // SAFETY: loading a system SQLite runs only its (trivial) initialisers.
        if let Ok(lib) = unsafe { libloading::Library::new(*name) } {
            if let Some(found) = install(lib, name.to_string(), false)? {
                log::warn!(
                    "cloacina is using the SQLite library {name}, not the one of Python's sqlite3 module; \
                     do not open the same database file with Python's sqlite3 in this process"
                );
                return Ok(found);
            }
        }
    }
    Err(Error::Configuration(format!(
        "no usable SQLite library found (looked at: {}); install SQLite 3.34.1 or newer",
        tried.join(", ")
    )))
}

/// Fills the function table from `lib`. Ok(None) when `lib` has no SQLite in it.
fn install(lib: libloading::Library, source: String, shared: bool) -> Result<Option<SqliteLibrary>> {
    let lookup = |symbol: &[u8]| -> Option<*mut c_void> {
        // SAFETY: we only read the address of the symbol.
        unsafe { lib.get::<*mut c_void>(symbol).ok().map(|s| *s) }.filter(|p| !p.is_null())
    };
    if lookup(b"sqlite3_libversion_number\0").is_none() {
        return Ok(None);
    }
    // SAFETY: sqlite3_api_routines is a plain table of optional function pointers, for
    // which all-zero bytes are valid (every entry None).
    let mut api: Box<ffi::sqlite3_api_routines> = Box::new(unsafe { std::mem::zeroed() });
    macro_rules! fill {
        ($($field:ident => $symbol:literal),* $(,)?) => {
            $(
                // SAFETY: the symbol is SQLite's implementation of exactly this entry
                // (sqlite3ext.h pairs them), so the function types agree.
                api.$field = lookup(concat!($symbol, "\0").as_bytes())
                    .map(|p| unsafe { std::mem::transmute::<*mut c_void, _>(p) });
            )*
        };
    }
    for_each_api_symbol!(fill);
    let threadsafe = api.xthreadsafe.map(|f| unsafe { f() }).unwrap_or(0);
    let api: &'static mut ffi::sqlite3_api_routines = Box::leak(api);
    // SAFETY: the table is complete for this library and lives for the whole process.
    if let Err(e) = unsafe { ffi::rusqlite_extension_init2(api) } {
        return Err(Error::Configuration(format!("the SQLite library {source} cannot be used: {e}")));
    }
    if threadsafe == 0 {
        return Err(Error::Configuration(format!(
            "the SQLite library {source} was compiled without thread support (SQLITE_THREADSAFE=0)"
        )));
    }
    // SAFETY: the table is initialised; sqlite3_libversion returns a static string.
    let version =
        unsafe { std::ffi::CStr::from_ptr(ffi::sqlite3_libversion()) }.to_string_lossy().into_owned();
    // The library must outlive every connection: keep it loaded for the process.
    std::mem::forget(lib);
    log::debug!("bound to SQLite {version} from {source}");
    Ok(Some(SqliteLibrary { version, source, shared_with_python: shared }))
}

enum Candidate {
    /// A file already loaded in the process (Python's _sqlite3 module or its SQLite).
    Loaded(PathBuf),
    /// A library already loaded by name (the Windows sqlite3.dll, or the soname on unix).
    LoadedName(&'static str),
    /// The interpreter's global symbol scope.
    Process,
}

impl Candidate {
    fn describe(&self) -> String {
        match self {
            Candidate::Loaded(p) => p.display().to_string(),
            Candidate::LoadedName(n) => format!("{n} (already loaded)"),
            Candidate::Process => "the Python process's global symbols".to_string(),
        }
    }

    /// Opens the candidate only if it is already loaded: never a new copy.
    fn open_loaded(&self) -> Option<libloading::Library> {
        #[cfg(unix)]
        {
            use libloading::os::unix::Library;
            let flags = libc::RTLD_NOLOAD | libc::RTLD_LAZY;
            // SAFETY: RTLD_NOLOAD returns an existing handle and runs no initialisers.
            let lib = match self {
                Candidate::Loaded(p) => unsafe { Library::open(Some(p), flags) }.ok(),
                Candidate::LoadedName(n) => unsafe { Library::open(Some(*n), flags) }.ok(),
                Candidate::Process => Some(Library::this()),
            };
            lib.map(Into::into)
        }
        #[cfg(windows)]
        {
            use libloading::os::windows::Library;
            let lib = match self {
                Candidate::Loaded(p) => Library::open_already_loaded(p).ok(),
                Candidate::LoadedName(n) => Library::open_already_loaded(*n).ok(),
                Candidate::Process => Library::this().ok(),
            };
            lib.map(Into::into)
        }
    }
}

fn python_candidates(python_module: Option<PathBuf>) -> Vec<Candidate> {
    let mut out = Vec::new();
    if let Some(p) = python_module {
        out.push(Candidate::Loaded(p));
    }
    for n in system_names() {
        out.push(Candidate::LoadedName(n));
    }
    out.push(Candidate::Process);
    out
}

fn system_names() -> &'static [&'static str] {
    if cfg!(target_os = "macos") {
        &["libsqlite3.dylib", "/usr/lib/libsqlite3.dylib"]
    } else if cfg!(windows) {
        &["sqlite3.dll", "winsqlite3.dll"]
    } else {
        &["libsqlite3.so.0", "libsqlite3.so"]
    }
}
