//! Chat templates: turning a conversation into the prompt text a chat model was trained on.
//!
//! Instruction-tuned models ship a Jinja template in the GGUF metadata key
//! `tokenizer.chat_template`. [`ChatTemplate`] renders it with [`minijinja`] the way Hugging
//! Face `transformers` and llama.cpp do: `trim_blocks` and `lstrip_blocks` on, no trailing
//! newline kept, no HTML escaping, Python string methods (`.strip()`, `.startswith()`, ...)
//! available, and the globals templates expect (`messages`, `add_generation_prompt`,
//! `bos_token`, `eos_token`, `raise_exception`, `strftime_now`; `tools` is `none`).
//!
//! A model without a template gets ChatML, as in llama.cpp.
//!
//! The template comes from the model file, so it is untrusted input: rendering is sandboxed
//! (no file or network access), and bounded by [`ChatLimits`] (instructions executed,
//! recursion depth, output size). Every failure is a [`ChatError`], never a panic.
//!
//! ```
//! use openweight::chat::{ChatMessage, ChatTemplate};
//!
//! let template = ChatTemplate::chatml();
//! let prompt = template
//!     .render(&[ChatMessage::system("Be brief."), ChatMessage::user("Hi")], true)
//!     .unwrap();
//! assert_eq!(
//!     prompt,
//!     "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
//!      <|im_start|>assistant\n"
//! );
//! ```

use std::fmt;
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::{AutoEscape, Environment, ErrorKind, Value};

use crate::gguf::{GgufError, GgufFile};
use crate::model::Model;
use crate::tokenizer::Tokenizer;

/// The GGUF metadata key holding the chat template.
pub const CHAT_TEMPLATE_KEY: &str = "tokenizer.chat_template";

/// Largest template source accepted, in bytes. Published templates are a few kilobytes;
/// the largest known ones are well under 100 KiB.
pub const MAX_TEMPLATE_BYTES: usize = 1 << 20;

/// The name the template is registered under (appears in error messages).
const TEMPLATE_NAME: &str = "chat_template";

/// ChatML, used when a model has no template of its own.
const CHATML_SOURCE: &str = "{%- for message in messages -%}\
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}";

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChatMessage {
    /// Who speaks: usually `"system"`, `"user"` or `"assistant"`; templates decide what
    /// other roles they accept.
    pub role: String,
    /// What was said. Inserted verbatim: Jinja syntax in it is text, not code.
    pub content: String,
}

impl ChatMessage {
    /// A message with any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `"system"` message (instructions for the assistant).
    pub fn system(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("system", content)
    }

    /// A `"user"` message.
    pub fn user(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("user", content)
    }

    /// An `"assistant"` message (an earlier model reply).
    pub fn assistant(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("assistant", content)
    }
}

/// Resource limits for rendering an untrusted template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatLimits {
    /// Template instructions one render may execute. Real templates use roughly a hundred
    /// per message.
    pub fuel: u64,
    /// Nesting depth of loops, conditionals and macro calls (capped by minijinja at 500).
    pub recursion: usize,
    /// Largest rendered prompt, in bytes.
    pub max_output_bytes: usize,
}

impl Default for ChatLimits {
    /// 5 million instructions, depth 200, 8 MiB of output.
    fn default() -> ChatLimits {
        ChatLimits {
            fuel: 5_000_000,
            recursion: 200,
            max_output_bytes: 8 << 20,
        }
    }
}

/// Which resource limit a template hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChatLimit {
    /// The template source is larger than [`MAX_TEMPLATE_BYTES`].
    TemplateSize,
    /// [`ChatLimits::fuel`] instructions were executed.
    Fuel,
    /// [`ChatLimits::recursion`] was exceeded.
    Recursion,
    /// The output grew past [`ChatLimits::max_output_bytes`].
    OutputSize,
}

impl fmt::Display for ChatLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChatLimit::TemplateSize => "template size",
            ChatLimit::Fuel => "instruction (fuel)",
            ChatLimit::Recursion => "recursion",
            ChatLimit::OutputSize => "output size",
        })
    }
}

/// Why a chat template could not be loaded or rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChatError {
    /// The `tokenizer.chat_template` metadata could not be read (e.g. it is not a string).
    #[error("reading the chat template: {0}")]
    Gguf(#[from] GgufError),
    /// The template is not valid Jinja.
    #[error("chat template does not compile: {0}")]
    Syntax(String),
    /// The template called `raise_exception(message)`, usually to reject a conversation
    /// shape it does not support (e.g. roles that do not alternate).
    #[error("chat template rejected the conversation: {0}")]
    Raised(String),
    /// The template hit a resource limit.
    #[error("chat template exceeded its {0} limit")]
    Limit(ChatLimit),
    /// Any other failure while rendering (unknown filter, bad operation, ...).
    #[error("chat template failed to render: {0}")]
    Render(String),
}

/// A compiled chat template with the special-token strings it needs.
///
/// Build it with [`ChatTemplate::from_model`], [`ChatTemplate::from_gguf`],
/// [`ChatTemplate::from_source`] or [`ChatTemplate::chatml`], then call
/// [`ChatTemplate::render`]. The result is prompt *text*: special tokens such as
/// `<|im_start|>` appear as text, so encode it with special-token parsing on. Some templates
/// (e.g. Gemma's) start with the BOS token text themselves; do not add a second BOS then.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
    fallback: bool,
    limits: ChatLimits,
    clock: Option<SystemTime>,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_bytes", &self.source.len())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("fallback", &self.fallback)
            .field("limits", &self.limits)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// The template of a loaded model (see [`ChatTemplate::from_gguf`]).
    pub fn from_model(model: &Model) -> Result<ChatTemplate, ChatError> {
        ChatTemplate::from_gguf(model.gguf(), model.tokenizer())
    }

    /// The template stored under `tokenizer.chat_template`, or ChatML if there is none.
    /// `bos_token` and `eos_token` are the texts of the tokenizer's BOS and EOS tokens (empty
    /// if the vocabulary has none).
    pub fn from_gguf(gguf: &GgufFile, tokenizer: &Tokenizer) -> Result<ChatTemplate, ChatError> {
        let token = |id: Option<u32>| {
            id.map(|id| String::from_utf8_lossy(tokenizer.token_bytes(id)).into_owned())
                .unwrap_or_default()
        };
        let bos = token(tokenizer.bos_id());
        let eos = token(tokenizer.eos_id());
        match gguf.get_str_opt(CHAT_TEMPLATE_KEY)? {
            Some(source) if !source.trim().is_empty() => {
                ChatTemplate::from_source(source, &bos, &eos)
            }
            _ => Ok(ChatTemplate::chatml_with_tokens(&bos, &eos)),
        }
    }

    /// Compiles a Jinja chat template. `bos_token` and `eos_token` become the template
    /// globals of the same names.
    pub fn from_source(
        source: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<ChatTemplate, ChatError> {
        ChatTemplate::build(source, bos_token, eos_token, false)
    }

    /// The ChatML fallback: `<|im_start|>{role}\n{content}<|im_end|>\n` per message, then
    /// `<|im_start|>assistant\n` when a generation prompt is asked for.
    pub fn chatml() -> ChatTemplate {
        ChatTemplate::chatml_with_tokens("", "")
    }

    fn chatml_with_tokens(bos_token: &str, eos_token: &str) -> ChatTemplate {
        match ChatTemplate::build(CHATML_SOURCE, bos_token, eos_token, true) {
            Ok(t) => t,
            // The built-in source is a constant checked by the unit tests.
            Err(e) => unreachable!("built-in ChatML template does not compile: {e}"),
        }
    }

    fn build(
        source: &str,
        bos_token: &str,
        eos_token: &str,
        fallback: bool,
    ) -> Result<ChatTemplate, ChatError> {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(ChatError::Limit(ChatLimit::TemplateSize));
        }
        let limits = ChatLimits::default();
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        apply_limits(&mut env, &limits);
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|e| ChatError::Syntax(e.to_string()))?;
        Ok(ChatTemplate {
            env,
            source: source.to_owned(),
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
            fallback,
            limits,
            clock: None,
        })
    }

    /// Renders `messages` into prompt text. With `add_generation_prompt`, the text ends with
    /// the header of an assistant turn, ready for the model to continue.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ChatError::Render(e.to_string()))?;
        let messages: Value = messages
            .iter()
            .map(|m| {
                Value::from_iter([
                    ("role", Value::from(m.role.as_str())),
                    ("content", Value::from(m.content.as_str())),
                ])
            })
            .collect();
        let now = unix_seconds(self.clock.unwrap_or_else(SystemTime::now));
        let strftime_now = Value::from_function(move |format: String| strftime(&format, now));
        let context = Value::from_iter([
            ("messages", messages),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("bos_token", Value::from(self.bos_token.as_str())),
            ("eos_token", Value::from(self.eos_token.as_str())),
            ("tools", Value::from(())),
            ("strftime_now", strftime_now),
        ]);
        let mut out = CappedWriter {
            buf: Vec::new(),
            cap: self.limits.max_output_bytes,
            exceeded: false,
        };
        let result = template.render_captured_to(context, &mut out).map(drop);
        if out.exceeded {
            return Err(ChatError::Limit(ChatLimit::OutputSize));
        }
        result.map_err(classify)?;
        String::from_utf8(out.buf)
            .map_err(|_| ChatError::Render("rendered text is not valid UTF-8".to_owned()))
    }

    /// Whether this is the built-in ChatML fallback (the model had no template).
    pub fn is_fallback(&self) -> bool {
        self.fallback
    }

    /// The Jinja source being rendered.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The text given to templates as `bos_token`.
    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    /// The text given to templates as `eos_token`.
    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// The limits renders run under.
    pub fn limits(&self) -> ChatLimits {
        self.limits
    }

    /// Replaces the limits renders run under.
    pub fn set_limits(&mut self, limits: ChatLimits) {
        apply_limits(&mut self.env, &limits);
        self.limits = limits;
    }

    /// Fixes the time `strftime_now` reports (for reproducible prompts); `None` uses the
    /// system clock at each render. Times are UTC.
    pub fn set_clock(&mut self, now: Option<SystemTime>) {
        self.clock = now;
    }
}

fn apply_limits(env: &mut Environment<'static>, limits: &ChatLimits) {
    env.set_fuel(Some(limits.fuel));
    env.set_recursion_limit(limits.recursion);
}

/// Marks an error as coming from the template's own `raise_exception` call.
#[derive(Debug)]
struct RaisedByTemplate(String);

impl fmt::Display for RaisedByTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedByTemplate {}

/// The `raise_exception(message)` global of Hugging Face templates.
fn raise_exception(message: String) -> Result<Value, minijinja::Error> {
    Err(
        minijinja::Error::new(ErrorKind::InvalidOperation, message.clone())
            .with_source(RaisedByTemplate(message)),
    )
}

/// Maps a minijinja render error to a [`ChatError`], looking through wrapped errors for
/// template exceptions and exhausted limits.
fn classify(err: minijinja::Error) -> ChatError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = cause {
        if let Some(raised) = e.downcast_ref::<RaisedByTemplate>() {
            return ChatError::Raised(raised.0.clone());
        }
        if let Some(jinja) = e.downcast_ref::<minijinja::Error>() {
            if jinja.kind() == ErrorKind::OutOfFuel {
                return ChatError::Limit(ChatLimit::Fuel);
            }
            if jinja.kind() == ErrorKind::InvalidOperation
                && jinja.detail() == Some("recursion limit exceeded")
            {
                return ChatError::Limit(ChatLimit::Recursion);
            }
        }
        cause = e.source();
    }
    ChatError::Render(err.to_string())
}

/// Collects rendered output, failing once it would grow past `cap` bytes.
struct CappedWriter {
    buf: Vec<u8>,
    cap: usize,
    exceeded: bool,
}

impl io::Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.cap {
            self.exceeded = true;
            return Err(io::Error::other("chat template output size limit exceeded"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whole seconds since the Unix epoch (negative before it).
fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// A UTC calendar time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CivilTime {
    year: i64,
    /// 1..=12
    month: u32,
    /// 1..=31
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 0 = Sunday
    weekday: u32,
    /// 1..=366
    day_of_year: u32,
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Splits Unix seconds into a proleptic Gregorian UTC date and time.
fn civil_time(unix: i64) -> CivilTime {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400) as u32;
    // Days since 0000-03-01 grouped into 400-year eras of 146 097 days; years start in
    // March so the leap day is the last day of a year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_march_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_march_year + 2) / 153;
    let day = (day_of_march_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    const DAYS_BEFORE_MONTH: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let day_of_year =
        DAYS_BEFORE_MONTH[(month - 1) as usize] + day + u32::from(month > 2 && is_leap(year));
    CivilTime {
        year,
        month,
        day,
        hour: secs / 3_600,
        minute: secs / 60 % 60,
        second: secs % 60,
        // 1970-01-01 was a Thursday.
        weekday: (days + 4).rem_euclid(7) as u32,
        day_of_year,
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// Formats `unix` (UTC) like C/Python `strftime` in the C locale. Supports `%a %A %b %B %d
/// %e %F %H %I %j %m %M %p %S %T %y %Y %Z %z %%`; other directives are copied unchanged,
/// as glibc does.
fn strftime(format: &str, unix: i64) -> String {
    use fmt::Write as _;
    let t = civil_time(unix);
    let month = MONTHS[(t.month - 1) as usize];
    let weekday = WEEKDAYS[t.weekday as usize];
    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(d) = chars.next() else {
            out.push('%');
            break;
        };
        // Writing to a String cannot fail.
        let _ = match d {
            'a' => write!(out, "{}", &weekday[..3]),
            'A' => write!(out, "{weekday}"),
            'b' | 'h' => write!(out, "{}", &month[..3]),
            'B' => write!(out, "{month}"),
            'd' => write!(out, "{:02}", t.day),
            'e' => write!(out, "{:2}", t.day),
            'F' => write!(out, "{:04}-{:02}-{:02}", t.year, t.month, t.day),
            'H' => write!(out, "{:02}", t.hour),
            'I' => write!(out, "{:02}", (t.hour + 11) % 12 + 1),
            'j' => write!(out, "{:03}", t.day_of_year),
            'm' => write!(out, "{:02}", t.month),
            'M' => write!(out, "{:02}", t.minute),
            'p' => write!(out, "{}", if t.hour < 12 { "AM" } else { "PM" }),
            'S' => write!(out, "{:02}", t.second),
            'T' => write!(out, "{:02}:{:02}:{:02}", t.hour, t.minute, t.second),
            'y' => write!(out, "{:02}", t.year.rem_euclid(100)),
            'Y' => write!(out, "{}", t.year),
            'Z' => write!(out, "UTC"),
            'z' => write!(out, "+0000"),
            '%' => write!(out, "%"),
            other => write!(out, "%{other}"),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation() -> Vec<ChatMessage> {
        vec![
            ChatMessage::system("S"),
            ChatMessage::user("U1"),
            ChatMessage::assistant("A1"),
            ChatMessage::user("U2"),
        ]
    }

    #[test]
    fn chatml_renders_every_turn_and_the_generation_prompt() {
        let text = ChatTemplate::chatml()
            .render(&conversation(), true)
            .unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n\
             <|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nU2<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    #[test]
    fn chatml_without_generation_prompt_ends_after_the_last_turn() {
        let text = ChatTemplate::chatml()
            .render(&[ChatMessage::user("U")], false)
            .unwrap();
        assert_eq!(text, "<|im_start|>user\nU<|im_end|>\n");
    }

    #[test]
    fn chatml_is_the_fallback_and_sources_are_not() {
        assert!(ChatTemplate::chatml().is_fallback());
        assert!(!ChatTemplate::from_source("x", "", "")
            .unwrap()
            .is_fallback());
    }

    #[test]
    fn empty_conversation_renders_empty_chatml() {
        assert_eq!(ChatTemplate::chatml().render(&[], false).unwrap(), "");
    }

    #[test]
    fn bos_and_eos_tokens_are_globals() {
        let t =
            ChatTemplate::from_source("{{ bos_token }}|{{ eos_token }}", "<s>", "</s>").unwrap();
        assert_eq!(t.render(&[], false).unwrap(), "<s>|</s>");
    }

    #[test]
    fn tools_is_none() {
        let t = ChatTemplate::from_source(
            "{{ tools is defined }} {{ tools is none }} {{ 'T' if tools else 'F' }}",
            "",
            "",
        )
        .unwrap();
        assert_eq!(t.render(&[], false).unwrap(), "True True F");
    }

    #[test]
    fn blocks_are_trimmed_like_transformers() {
        // trim_blocks drops the newline after a tag; lstrip_blocks drops indentation before it.
        let src = "{% for m in messages %}\n    {% if m.role == 'user' %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}\n";
        let t = ChatTemplate::from_source(src, "", "").unwrap();
        let text = t
            .render(&[ChatMessage::user("a"), ChatMessage::user("b")], false)
            .unwrap();
        assert_eq!(text, "[a]\n[b]\n");
    }

    #[test]
    fn python_string_methods_work() {
        let src = "{{ messages[0].content.strip() }}|{{ messages[0].content.startswith('  x') }}|\
                   {{ messages[0].content.split('y')[1] }}";
        let t = ChatTemplate::from_source(src, "", "").unwrap();
        assert_eq!(
            t.render(&[ChatMessage::user("  xyz ")], false).unwrap(),
            "xyz|True|z "
        );
    }

    #[test]
    fn loop_controls_are_available() {
        let src = "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.content }}{% endfor %}";
        let t = ChatTemplate::from_source(src, "", "").unwrap();
        let text = t
            .render(&[ChatMessage::user("a"), ChatMessage::user("b")], false)
            .unwrap();
        assert_eq!(text, "a");
    }

    #[test]
    fn html_is_not_escaped() {
        let t = ChatTemplate::from_source("{{ messages[0].content }}", "", "").unwrap();
        assert_eq!(
            t.render(&[ChatMessage::user("<&\">")], false).unwrap(),
            "<&\">"
        );
    }

    #[test]
    fn raise_exception_becomes_a_raised_error_with_its_message() {
        let t =
            ChatTemplate::from_source("a{{ raise_exception('no system role') }}", "", "").unwrap();
        match t.render(&[], false) {
            Err(ChatError::Raised(msg)) => assert_eq!(msg, "no system role"),
            other => panic!("expected Raised, got {other:?}"),
        }
    }

    #[test]
    fn raise_exception_inside_a_macro_is_still_a_raised_error() {
        let src = "{% macro check(m) %}{{ raise_exception('bad ' ~ m.role) }}{% endmacro %}\
                   {% for m in messages %}{{ check(m) }}{% endfor %}";
        let t = ChatTemplate::from_source(src, "", "").unwrap();
        match t.render(&[ChatMessage::new("tool", "x")], false) {
            Err(ChatError::Raised(msg)) => assert_eq!(msg, "bad tool"),
            other => panic!("expected Raised, got {other:?}"),
        }
    }

    #[test]
    fn syntax_errors_are_reported_at_construction() {
        let err = ChatTemplate::from_source("{% for m in messages %}", "", "").unwrap_err();
        assert!(matches!(err, ChatError::Syntax(_)), "{err:?}");
    }

    #[test]
    fn unknown_filter_is_an_error_not_a_panic() {
        let err = ChatTemplate::from_source("{{ 1 | no_such_filter }}", "", "")
            .and_then(|t| t.render(&[], false))
            .unwrap_err();
        assert!(
            matches!(err, ChatError::Syntax(_) | ChatError::Render(_)),
            "{err:?}"
        );
    }

    #[test]
    fn oversized_template_source_is_rejected() {
        let src = "a".repeat(MAX_TEMPLATE_BYTES + 1);
        let err = ChatTemplate::from_source(&src, "", "").unwrap_err();
        assert!(
            matches!(err, ChatError::Limit(ChatLimit::TemplateSize)),
            "{err:?}"
        );
    }

    #[test]
    fn nested_loops_run_out_of_fuel() {
        let src =
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        let err = ChatTemplate::from_source(src, "", "")
            .unwrap()
            .render(&[], false)
            .unwrap_err();
        assert!(matches!(err, ChatError::Limit(ChatLimit::Fuel)), "{err:?}");
    }

    #[test]
    fn self_calling_macro_hits_the_recursion_limit() {
        let src = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
        let err = ChatTemplate::from_source(src, "", "")
            .unwrap()
            .render(&[], false)
            .unwrap_err();
        assert!(
            matches!(err, ChatError::Limit(ChatLimit::Recursion)),
            "{err:?}"
        );
    }

    #[test]
    fn recursive_loop_hits_the_recursion_limit() {
        let src = "{% for x in [1] recursive %}{{ loop([x]) }}{% endfor %}";
        let err = ChatTemplate::from_source(src, "", "")
            .unwrap()
            .render(&[], false)
            .unwrap_err();
        assert!(
            matches!(err, ChatError::Limit(ChatLimit::Recursion)),
            "{err:?}"
        );
    }

    #[test]
    fn output_beyond_the_cap_is_an_error() {
        let mut t = ChatTemplate::from_source(
            "{% for i in range(1000) %}{{ messages[0].content }}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        t.set_limits(ChatLimits {
            max_output_bytes: 999,
            ..ChatLimits::default()
        });
        let msg = [ChatMessage::user("x")];
        let err = t.render(&msg, false).unwrap_err();
        assert!(
            matches!(err, ChatError::Limit(ChatLimit::OutputSize)),
            "{err:?}"
        );
        t.set_limits(ChatLimits {
            max_output_bytes: 1000,
            ..ChatLimits::default()
        });
        assert_eq!(t.render(&msg, false).unwrap().len(), 1000);
    }

    #[test]
    fn a_small_fuel_budget_stops_a_short_render() {
        let mut t = ChatTemplate::chatml();
        t.set_limits(ChatLimits {
            fuel: 5,
            ..ChatLimits::default()
        });
        let err = t.render(&conversation(), true).unwrap_err();
        assert!(matches!(err, ChatError::Limit(ChatLimit::Fuel)), "{err:?}");
    }

    #[test]
    fn strftime_now_uses_the_fixed_clock() {
        let mut t = ChatTemplate::from_source("{{ strftime_now('%d %b %Y') }}", "", "").unwrap();
        // 2024-07-26 12:34:56 UTC
        t.set_clock(Some(
            UNIX_EPOCH + std::time::Duration::from_secs(1_721_997_296),
        ));
        assert_eq!(t.render(&[], false).unwrap(), "26 Jul 2024");
    }

    #[test]
    fn strftime_formats_all_supported_directives() {
        // 2024-02-29 (a Thursday, day 60 of a leap year) 13:05:09 UTC
        let t = 1_709_211_909;
        assert_eq!(
            strftime(
                "%a %A %b %B %d %e %F %H %I %j %m %M %p %S %T %y %Y %Z %z %% %q",
                t
            ),
            "Thu Thursday Feb February 29 29 2024-02-29 13 01 060 02 05 PM 09 13:05:09 24 2024 \
             UTC +0000 % %q"
        );
    }

    #[test]
    fn civil_time_handles_epoch_and_dates_before_it() {
        let epoch = civil_time(0);
        assert_eq!(
            (epoch.year, epoch.month, epoch.day, epoch.weekday),
            (1970, 1, 1, 4)
        );
        assert_eq!(epoch.day_of_year, 1);
        let before = civil_time(-1);
        assert_eq!(
            (
                before.year,
                before.month,
                before.day,
                before.hour,
                before.second
            ),
            (1969, 12, 31, 23, 59)
        );
        assert_eq!(before.day_of_year, 365);
        let leap_end = civil_time(1_735_603_200); // 2024-12-31
        assert_eq!((leap_end.year, leap_end.day_of_year), (2024, 366));
    }

    #[test]
    fn trailing_percent_is_kept() {
        assert_eq!(strftime("100%", 0), "100%");
    }
}
