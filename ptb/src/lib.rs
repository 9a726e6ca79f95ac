//! The PTB tokenisation of pycocoevalcap 1.2 (`tokenizer/ptbtokenizer.py`), in Rust.
//!
//! pycocoevalcap writes every caption of one side (references, or candidates) on its own line of
//! one file (a newline inside a caption becomes a space), runs Stanford CoreNLP 3.4.1's
//! `edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase` on it, and drops the tokens
//! of its `PUNCTUATIONS` list from each output line. The tokenizer is a JFlex scanner,
//! `PTBLexer.flex` (tag v3.4.1 of stanfordnlp/CoreNLP, generated with JFlex 1.5.1). This module
//! is that scanner run by a small JFlex emulator: the macros and rules below are the lexer's
//! own, in its notation, translated to `regex-automata` syntax when first used, and scanned as
//! JFlex scans:
//!
//! - the longest match over all rules wins, a tie goes to the earlier rule, and a rule `r1/r2`
//!   (trailing context) counts `r1 r2` for that length and returns the longest `r1` (JFlex's
//!   general look-ahead);
//! - `%caseless`: a letter outside a character class matches either case; classes are literal;
//! - `~c` is JFlex's "up to" operator (it occurs once, in `ASIANSMILEY`'s `\[\^x=~<>]`, where the
//!   jar indeed reads `^.[^x=foo<>]` as one token);
//! - `[:letter:]`, `[:digit:]`, `[:uppercase:]` are Java's `isLetter`, `isDigit`, `isUpperCase`
//!   on the Basic Multilingual Plane (the scanner reads UTF-16 code units), here from Rust's
//!   Unicode tables, which are newer than the JDK that generated the lexer;
//! - the options in force are those of the command line: PTB3 escaping (`(` -> `-LRB-`, `"` ->
//!   ``` `` ``` / `''`, `--`, `...`, fractions, currency), `tokenizeNLs`, untokenizable characters
//!   deleted; tokens are lower-cased with Java's `toLowerCase(Locale.ENGLISH)`.
//!
//! Because the candidates (or the references) are one file, a rule's trailing context can look
//! past the end of a caption into the next line: "... reads K." followed by a caption starting
//! "A man" gives `k`, followed by "Two men" gives `k.`. [`ptb_tokenize_batch`] reproduces that
//! by scanning the captions joined as pycocoevalcap joins them; [`ptb_tokenize`] scans one
//! caption alone.
//!
//! Agreement: identical to the jar on all 25,014 captions of COCO val2017 (fixture
//! `tests/fixtures/coco_caption_metrics/ptb_val2017.json.gz`), on 120 hand-written hard cases
//! (`ptb_tricky.json`: contractions, quotes, abbreviations, numbers, URLs, smileys, Unicode
//! punctuation, emoji, captions whose tokens depend on the next caption), on 3,000 perturbed
//! COCO captions (`ptb_perturbed.json.gz`) and on the oracle's inputs: 0 differences. Known differences, none of which occurs in those captions:
//! - a carriage return, vertical tab, form feed, U+0085, U+2028 or U+2029 inside a caption is a
//!   line break for the jar, which shifts every later caption onto the wrong image in
//!   pycocoevalcap; here they are spaces like `\n`, so captions stay aligned (likewise a token
//!   that would swallow a line break, only possible inside an SGML tag's quoted attribute);
//! - letters assigned by Unicode after the JDK that built the 3.4.1 lexer count as letters here.
//!
//! Licence note: the rule set is transcribed from `PTBLexer.flex` (GPL-2.0-or-later, The Board of
//! Trustees of The Leland Stanford Junior University), the same code pycocoevalcap ships as a jar.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;

use regex_automata::hybrid::dfa::{Cache, DFA, OverlappingState};
use regex_automata::{Anchored, Input, MatchKind};

/// Tokens pycocoevalcap removes after tokenising (compared after lower-casing, so `-lrb-`
/// stays: the jar's `-LRB-` is lower-cased before the comparison).
pub const PUNCTUATIONS: [&str; 17] = [
    "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
    "...", ";",
];

/// The macros of `PTBLexer.flex` v3.4.1 in its order (the strict-Treebank-3 `FRACSTB3` is left
/// out: its rule is inactive in the default state).
const MACROS: &[(&str, &str)] = &[
    (
        "SGML",
        r##"\<([!\?][A-Za-z\-][^>\r\n]*|[A-Za-z][A-Za-z0-9_:\.\-]*([ ]+([A-Za-z][A-Za-z0-9_:\.\-]*|[A-Za-z][A-Za-z0-9_:\.\-]*[ ]*=[ ]*('[^']*'|\"[^\"]*\")))*[ ]*\/?|\/[A-Za-z][A-Za-z0-9_:\.\-]*)[ ]*\>"##,
    ),
    (
        "SPMDASH",
        r##"&(MD|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015]"##,
    ),
    ("SPAMP", r##"&amp;"##),
    ("SPPUNC", r##"&(HT|TL|UR|LR|QC|QL|QR|odq|cdq|#[0-9]+);"##),
    ("SPLET", r##"&[aeiouAEIOU](acute|grave|uml);"##),
    ("SPACE", r##"[ \t\u00A0\u2000-\u200A\u3000]"##),
    ("SPACES", r##"{SPACE}+"##),
    (
        "NEWLINE",
        r##"\r|\r?\n|\u2028|\u2029|\u000B|\u000C|\u0085"##,
    ),
    ("SPACENL", r##"({SPACE}|{NEWLINE})"##),
    ("SPACENLS", r##"{SPACENL}+"##),
    ("SENTEND", r##"{SPACENL}({SPACENL}|[:uppercase:]|{SGML})"##),
    ("DIGIT", r##"[:digit:]|[\u07C0-\u07C9]"##),
    (
        "DATE",
        r##"{DIGIT}{1,2}[\-\/]{DIGIT}{1,2}[\-\/]{DIGIT}{2,4}"##,
    ),
    (
        "NUM",
        r##"{DIGIT}+|{DIGIT}*([.:,\u00AD\u066B\u066C]{DIGIT}+)+"##,
    ),
    ("NUMBER", r##"[\-+]?{NUM}"##),
    (
        "SUBSUPNUM",
        r##"[\u207A\u207B\u208A\u208B]?([\u2070\u00B9\u00B2\u00B3\u2074-\u2079]+|[\u2080-\u2089]+)"##,
    ),
    (
        "FRAC",
        r##"({DIGIT}{1,4}[- \u00A0])?{DIGIT}{1,4}(\\?\/|\u2044){DIGIT}{1,4}"##,
    ),
    ("FRAC2", r##"[\u00BC\u00BD\u00BE\u2153-\u215E]"##),
    ("DOLSIGN", r##"([A-Z]*\$|#)"##),
    (
        "DOLSIGN2",
        r##"[\u00A2\u00A3\u00A4\u00A5\u0080\u20A0\u20AC\u060B\u0E3F\u20A4\uFFE0\uFFE1\uFFE5\uFFE6]"##,
    ),
    (
        "LETTER",
        r##"([:letter:]|{SPLET}|[\u00AD\u0237-\u024F\u02C2-\u02C5\u02D2-\u02DF\u02E5-\u02FF\u0300-\u036F\u0370-\u037D\u0384\u0385\u03CF\u03F6\u03FC-\u03FF\u0483-\u0487\u04CF\u04F6-\u04FF\u0510-\u0525\u055A-\u055F\u0591-\u05BD\u05BF\u05C1\u05C2\u05C4\u05C5\u05C7\u0615-\u061A\u063B-\u063F\u064B-\u065E\u0670\u06D6-\u06EF\u06FA-\u06FF\u070F\u0711\u0730-\u074F\u0750-\u077F\u07A6-\u07B1\u07CA-\u07F5\u07FA\u0900-\u0903\u093C\u093E-\u094E\u0951-\u0955\u0962-\u0963\u0981-\u0983\u09BC-\u09C4\u09C7\u09C8\u09CB-\u09CD\u09D7\u09E2\u09E3\u0A01-\u0A03\u0A3C\u0A3E-\u0A4F\u0A81-\u0A83\u0ABC-\u0ACF\u0B82\u0BBE-\u0BC2\u0BC6-\u0BC8\u0BCA-\u0BCD\u0C01-\u0C03\u0C3E-\u0C56\u0D3E-\u0D44\u0D46-\u0D48\u0E30-\u0E3A\u0E47-\u0E4E\u0EB1-\u0EBC\u0EC8-\u0ECD])"##,
    ),
    (
        "WORD",
        r##"{LETTER}({LETTER}|{DIGIT})*([.!?]{LETTER}({LETTER}|{DIGIT})*)*"##,
    ),
    (
        "FILENAME_EXT",
        r##"bat|bmp|c|class|cgi|cpp|dll|doc|docx|exe|gif|gz|h|htm|html|jar|java|jpeg|jpg|mov|mp3|pdf|php|pl|png|ppt|ps|py|sql|tar|txt|wav|x|xml|zip"##,
    ),
    (
        "FILENAME",
        r##"({LETTER}|{DIGIT})+([.]({LETTER}|{DIGIT})+)*([.]{FILENAME_EXT})"##,
    ),
    (
        "THING",
        r##"([dDoOlL]{APOSETCETERA}([:letter:]|[:digit:]))?([:letter:]|[:digit:])+({HYPHEN}([dDoOlL]{APOSETCETERA}([:letter:]|[:digit:]))?([:letter:]|[:digit:])+)*"##,
    ),
    ("THINGA", r##"[A-Z]+(([+&]|{SPAMP})[A-Z]+)+"##),
    (
        "THING3",
        r##"[A-Za-z0-9]+(-[A-Za-z]+){0,2}(\\?\/[A-Za-z0-9]+(-[A-Za-z]+){0,2}){1,2}"##,
    ),
    ("APOS", r##"['\u0092\u2019]|&apos;"##),
    ("APOSETCETERA", r##"{APOS}|[`\u0091\u2018\u201B]"##),
    (
        "HTHING",
        r##"[A-Za-z0-9][A-Za-z0-9.,\u00AD]*(-([A-Za-z0-9\u00AD]+|{ACRO2}\.))+"##,
    ),
    ("REDAUX", r##"{APOS}([msdMSD]|re|ve|ll)"##),
    ("SWORD", r##"[A-Za-z\u00AD]*[A-MO-Za-mo-z](\u00AD)*"##),
    ("SREDAUX", r##"n{APOSETCETERA}t"##),
    (
        "APOWORD",
        r##"{APOS}n{APOS}?|[lLdDjJ]{APOS}|Dunkin{APOS}|somethin{APOS}|ol{APOS}|{APOS}em|[A-HJ-XZn]{APOSETCETERA}[:letter:]{2}[:letter:]*|{APOS}[2-9]0s|{APOS}till?|[:letter:][:letter:]*[aeiouyAEIOUY]{APOSETCETERA}[aeiouA-Z][:letter:]*|{APOS}cause|cont'd\.?|'twas|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l|O{APOSETCETERA}o"##,
    ),
    ("APOWORD2", r##"y{APOS}"##),
    (
        "FULLURL",
        r##"https?:\/\/[^ \t\n\f\r\"<>|(){}]+[^ \t\n\f\r\"<>|.!?(){},-]"##,
    ),
    (
        "LIKELYURL",
        r##"((www\.([^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-zA-Z]{2,4})|(([^ \t\n\f\r\"`'<>|.!?(){},-_$]+\.)+(com|net|org|edu)))(\/[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-])?"##,
    ),
    (
        "EMAIL",
        r##"(&lt;|<)?[a-zA-Z0-9][^ \t\n\f\r\"<>|()\u00A0{}]*@([^ \t\n\f\r\"<>|(){}.\u00A0]+\.)*([^ \t\n\f\r\"<>|(){}.\u00A0]+)(&gt;|>)?"##,
    ),
    ("TWITTER_NAME", r##"@[a-zA-Z_][a-zA-Z_0-9]*"##),
    ("TWITTER_CATEGORY", r##"#{LETTER}+"##),
    ("TWITTER", r##"{TWITTER_NAME}|{TWITTER_CATEGORY}"##),
    (
        "ABMONTH",
        r##"Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec"##,
    ),
    ("ABDAYS", r##"Mon|Tue|Tues|Wed|Thu|Thurs|Fri"##),
    (
        "ABSTATE",
        r##"Ala|Ariz|[A]z|[A]rk|Calif|Colo|Conn|Ct|Dak|[D]el|Fla|Ga|[I]ll|Ind|Kans?|Ky|[L]a|[M]ass|Md|Mich|Minn|[M]iss|Mo|Mont|Neb|Nev|Okla|[O]re|[P]a|Penn|Tenn|[T]ex|Va|Vt|[W]ash|Wisc?|Wyo"##,
    ),
    (
        "ABCOMP",
        r##"Inc|Cos?|Corp|Pp?t[ye]s?|Ltd|Plc|Rt|Bancorp|Bhd|Assn|Univ|Intl|Sys"##,
    ),
    ("ABNUM", r##"tel|est|ext|sq"##),
    ("ABPTIT", r##"Jr|Sr|Bros|(Ed|Ph)\.D|Blvd|Rd|Esq"##),
    (
        "ABBREV1",
        r##"({ABMONTH}|{ABDAYS}|{ABSTATE}|{ABCOMP}|{ABNUM}|{ABPTIT}|etc|al|seq|Bldg)\."##,
    ),
    (
        "ACRO",
        r##"[A-Za-z](\.[A-Za-z])*|(Canada|Sino|Korean|EU|Japan|non)-U\.S|U\.S\.-(U\.K|U\.S\.S\.R)"##,
    ),
    (
        "ACRO2",
        r##"[A-Za-z](\.[A-Za-z])+|(Canada|Sino|Korean|EU|Japan|non)-U\.S|U\.S\.-(U\.K|U\.S\.S\.R)"##,
    ),
    (
        "ABTITLE",
        r##"Mr|Mrs|Ms|[M]iss|Drs?|Profs?|Sens?|Reps?|Attys?|Lt|Col|Gen|Messrs|Govs?|Adm|Rev|Maj|Sgt|Cpl|Pvt|Capt|Ste?|Ave|Pres|Lieut|Hon|Brig|Co?mdr|Pfc|Spc|Supts?|Det|Mt|Ft|Adj|Adv|Asst|Assoc|Ens|Insp|Mlle|Mme|Msgr|Sfc"##,
    ),
    ("ABCOMP2", r##"Invt|Elec|Natl|M[ft]g|Dept"##),
    (
        "ABBREV4",
        r##"{ABTITLE}|vs|Alex|Wm|Jos|Cie|a\.k\.a|cf|TREAS|Ph|{ACRO}|{ABCOMP2}"##,
    ),
    ("ABBREV2", r##"{ABBREV4}\."##),
    ("ACRONYM", r##"({ACRO})\."##),
    ("ABBREV3", r##"(ca|figs?|prop|nos?|art|bldg|prop|pp|op)\."##),
    (
        "PHONE",
        r##"(\([0-9]{2,3}\)[ \u00A0]?|(\+\+?)?([0-9]{2,4}[\- \u00A0])?[0-9]{2,4}[\- \u00A0])[0-9]{3,4}[\- \u00A0]?[0-9]{3,5}|((\+\+?)?[0-9]{2,4}\.)?[0-9]{2,4}\.[0-9]{3,4}\.[0-9]{3,5}"##,
    ),
    ("FAKEDUCKFEET", r##"<<|>>"##),
    ("LESSTHAN", r##"<|&lt;"##),
    ("GREATERTHAN", r##">|&gt;"##),
    ("HYPHEN", r##"[-_\u058A\u2010\u2011]"##),
    ("HYPHENS", r##"\-+"##),
    ("LDOTS", r##"\.{3,5}|(\.[ \u00A0]){2,4}\.|[\u0085\u2026]"##),
    ("ATS", r##"@+"##),
    ("UNDS", r##"_+"##),
    ("ASTS", r##"\*+|(\\\*){1,3}"##),
    ("HASHES", r##"#+"##),
    ("FNMARKS", r##"{ATS}|{HASHES}|{UNDS}"##),
    ("INSENTP", r##"[,;:\u3001]"##),
    (
        "QUOTES",
        r##"{APOS}|''|[`\u2018\u2019\u201A\u201B\u201C\u201D\u0091\u0092\u0093\u0094\u201E\u201F\u2039\u203A\u00AB\u00BB]{1,2}"##,
    ),
    ("DBLQUOT", r##"\"|&quot;"##),
    (
        "TBSPEC",
        r##"-(RRB|LRB|RCB|LCB|RSB|LSB)-|C\.D\.s|pro-|anti-|S(&|&amp;)P-500|S(&|&amp;)Ls|Cap{APOS}n|c{APOS}est"##,
    ),
    ("TBSPEC2", r##"{APOS}[0-9][0-9]"##),
    ("SMILEY", r##"[<>]?[:;=][\-o\*']?[\(\)DPdpO\\{@\|\[\]]"##),
    (
        "ASIANSMILEY",
        r##"[\^x=~<>]\.\[\^x=~<>]|[\-\^x=~<>']_[\-\^x=~<>']|\([\-\^x=~<>'][_.]?[\-\^x=~<>']\)|\([\^x=~<>']-[\^x=~<>'`]\)"##,
    ),
    (
        "MISCSYMBOL",
        r##"[+%&~\^|\\¦\u00A7¨\u00A9\u00AC\u00AE¯\u00B0-\u00B3\u00B4-\u00BA\u00D7\u00F7\u0387\u05BE\u05C0\u05C3\u05C6\u05F3\u05F4\u0600-\u0603\u0606-\u060A\u060C\u0614\u061B\u061E\u066A\u066D\u0703-\u070D\u07F6\u07F7\u07F8\u0964\u0965\u0E4F\u1FBD\u2016\u2017\u2020-\u2023\u2030-\u2038\u203B\u203E-\u2042\u2044\u207A-\u207F\u208A-\u208E\u2100-\u214F\u2190-\u21FF\u2200-\u2BFF\u3012\u30FB\uFF01-\uFF0F\uFF1A-\uFF20\uFF3B-\uFF40\uFF5B-\uFF65\uFF65]"##,
    ),
];

/// What a rule's action does with the matched text (`yytext`), for the options in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// The text as matched.
    Text,
    /// Keep all but the last `n` characters; they are scanned again (`yypushback(n)`).
    PushBack(usize),
    /// `normalizeSpace`: spaces inside the token become U+00A0.
    Nbsp,
    /// A fixed replacement (`--`, `-LRB-`, `...`).
    Fixed(&'static str),
    /// `&amp;` -> `&`.
    Amp,
    /// Soft hyphens (U+00AD) removed.
    SoftHyphens,
    /// `handleQuotes(tok, probablyLeft)` with `latexQuotes`.
    Quotes {
        left: bool,
    },
    Fractions,
    Currency,
    /// Phone numbers: spaces to U+00A0 and parentheses to `-LRB-`/`-RRB-`.
    Phone,
    /// Smileys: parentheses to `-LRB-`/`-RRB-`.
    Parens,
    /// `{HYPHENS}`: three or four hyphens are `--`.
    Hyphens,
    /// `{ACRONYM}` before a sentence start: "I." gives `I` then `.`; longer gives `U.S.` then `.`.
    Acronym,
    /// `{ABBREV1}` at a sentence end: the abbreviation with its period, then the period again.
    PeriodAgain,
    /// Whitespace, deleted characters.
    Skip,
    /// A line break: with `-preserveLines`, the end of a caption.
    Newline,
}

/// One rule of the lexer: `main` or `main/trail`, in JFlex notation, in the file's order.
#[derive(Debug)]
struct Rule {
    main: &'static str,
    trail: Option<&'static str>,
    action: Action,
}

const fn rule(main: &'static str, trail: Option<&'static str>, action: Action) -> Rule {
    Rule {
        main,
        trail,
        action,
    }
}

use Action::*;

/// The rules of `PTBLexer.flex` v3.4.1 in order (the `<YyStrictlyTreebank3>` one is left out).
const RULES: &[Rule] = &[
    rule(r"c[+][+]", None, Text),
    rule(r"(c|f)#", None, Text),
    rule(r"cannot", None, PushBack(3)),
    rule(r"'twas", None, PushBack(3)),
    rule(r"'tis", None, PushBack(2)),
    rule(r"gonna|gotta|lemme|gimme|wanna", None, PushBack(2)),
    rule(r"{SGML}", None, Nbsp),
    rule(r"{SPMDASH}", None, Fixed("--")),
    rule(r"{SPAMP}", None, Amp),
    rule(r"{SPPUNC}", None, Text),
    rule(r"{WORD}", Some(r"{REDAUX}"), SoftHyphens),
    rule(r"{SWORD}", Some(r"{SREDAUX}"), SoftHyphens),
    rule(r"{WORD}", None, SoftHyphens),
    rule(r"{APOWORD}", None, Text),
    rule(r"{APOWORD2}", Some(r"[:letter:]"), Text),
    rule(r"{FULLURL}", None, Text),
    rule(r"{LIKELYURL}", None, Text),
    rule(r"{EMAIL}", None, Text),
    rule(r"{TWITTER}", None, Text),
    rule(r"{REDAUX}", Some(r"[^A-Za-z]"), Quotes { left: false }),
    rule(r"{SREDAUX}", Some(r"[^A-Za-z]"), Quotes { left: false }),
    rule(r"{DATE}", None, Text),
    rule(r"{NUMBER}", None, SoftHyphens),
    rule(r"{SUBSUPNUM}", None, Text),
    rule(r"{FRAC}", None, Nbsp),
    rule(r"{FRAC2}", None, Fractions),
    rule(r"{TBSPEC}", None, Amp),
    rule(r"{THING3}", None, Text),
    rule(r"{DOLSIGN}", None, Text),
    rule(r"{DOLSIGN2}", None, Currency),
    rule(
        r"{ACRONYM}",
        Some(concat!(
            r"({SPACENLS})([A]bout|[A]ccording|[A]dditionally|[A]fter|[A]n|[A]|[A]s|[A]t|[B]ut|",
            r"[E]arlier|[H]e|[H]er|[H]ere|[H]owever|[I]f|[I]n|[I]t|[L]ast|[M]any|[M]ore|[M]r\.|",
            r"[M]s\.|[N]ow|[O]nce|[O]ne|[O]ther|[O]ur|[S]he|[S]ince|[S]o|[S]ome|[S]uch|[T]hat|",
            r"[T]he|[T]heir|[T]hen|[T]here|[T]hese|[T]hey|[T]his|[W]e|[W]hen|[W]hile|[W]hat|",
            r"[Y]et|[Y]ou|{SGML}){SPACENL}"
        )),
        Acronym,
    ),
    rule(r"{ABBREV3}", Some(r"{SPACENL}?[:digit:]"), Text),
    rule(r"(pt[eyEY]|co)\.", Some(r"{SPACE}(ltd|lim)"), Text),
    rule(r"{ABBREV1}", Some(r"{SENTEND}"), PeriodAgain),
    rule(r"{ABBREV1}", Some(r"[^][^]"), Text),
    rule(r"{ABBREV1}", None, PeriodAgain),
    rule(r"{ABBREV2}", None, Text),
    rule(r"{ABBREV4}", Some(r"{SPACE}"), Text),
    rule(r"{ACRO}", Some(r"{SPACENL}"), Text),
    rule(r"{TBSPEC2}", Some(r"{SPACENL}"), Text),
    rule(r"{FILENAME}", Some(r"({SPACENL}|[.?!,])"), Text),
    rule(r"{WORD}\.", Some(r"{INSENTP}"), SoftHyphens),
    rule(r"{PHONE}", None, Phone),
    rule(r"{DBLQUOT}", Some(r"[A-Za-z0-9$]"), Quotes { left: true }),
    rule(r"{DBLQUOT}", None, Quotes { left: false }),
    rule(r"\x7f", None, Skip),
    rule(r"{LESSTHAN}", None, Fixed("<")),
    rule(r"{GREATERTHAN}", None, Fixed(">")),
    rule(r"{SMILEY}", Some(r"[^A-Za-z0-9]"), Parens),
    rule(r"{ASIANSMILEY}", None, Parens),
    rule(r"\{", None, Fixed("-LCB-")),
    rule(r"\}", None, Fixed("-RCB-")),
    rule(r"\[", None, Fixed("-LSB-")),
    rule(r"\]", None, Fixed("-RSB-")),
    rule(r"\(", None, Fixed("-LRB-")),
    rule(r"\)", None, Fixed("-RRB-")),
    rule(r"{HYPHENS}", None, Hyphens),
    rule(r"{LDOTS}", None, Fixed("...")),
    rule(r"{FNMARKS}", None, Text),
    rule(r"{ASTS}", None, Text),
    rule(r"{INSENTP}", None, Text),
    rule(r"[?!]+", None, Text),
    rule(
        r"[.¡¿\u037E\u0589\u061F\u06D4\u0700-\u0702\u07FA\u3002]",
        None,
        Text,
    ),
    rule(r"=", None, Text),
    rule(r"\/", None, Text),
    rule(r"{HTHING}\.", Some(r"{INSENTP}"), SoftHyphens),
    rule(r"{HTHING}", None, SoftHyphens),
    rule(r"{THING}\.", Some(r"{INSENTP}"), Text),
    rule(r"{THING}", None, Text),
    rule(r"{THINGA}\.", Some(r"{INSENTP}"), Amp),
    rule(r"{THINGA}", None, Amp),
    rule(
        r"'",
        Some(r"[A-Za-z][^ \t\n\r\u00A0]"),
        Quotes { left: true },
    ),
    rule(r"{REDAUX}", None, Quotes { left: false }),
    rule(r"{SREDAUX}", None, Quotes { left: false }),
    rule(r"{QUOTES}", None, Quotes { left: false }),
    rule(r"{FAKEDUCKFEET}", None, Text),
    rule(r"{MISCSYMBOL}", None, Text),
    rule(r"\0|{SPACES}|[\u200B\u200E-\u200F\uFEFF]", None, Skip),
    rule(r"{NEWLINE}", None, Newline),
    rule(r"&nbsp;", None, Skip),
    // Untokenizable characters: deleted (the default `untokenizable=firstDelete`).
    rule(r".", None, Skip),
];

// ---------------------------------------------------------------------------------------------
// JFlex notation -> regex-automata syntax

/// Translates the JFlex regular expressions of [`MACROS`] and [`RULES`].
struct Translator {
    macros: HashMap<&'static str, &'static str>,
    done: HashMap<&'static str, String>,
}

/// Java's `.`: anything but a line terminator.
const ANY_BUT_NEWLINE: &str = r"[^\n\r\x0B\x0C\x{85}\x{2028}\x{2029}]";

fn hex(c: char) -> String {
    format!(r"\x{{{:X}}}", c as u32)
}

/// `%caseless`: a literal letter matches its upper-, lower- and title-case forms (Java's
/// `Character.toUpperCase` etc., one character each), never Unicode's wider case folding.
fn caseless_literal(c: char) -> String {
    fn single(mut it: impl Iterator<Item = char>) -> Option<char> {
        let f = it.next()?;
        it.next().is_none().then_some(f)
    }
    let mut forms = vec![c];
    let cases = [single(c.to_uppercase()), single(c.to_lowercase())];
    for f in cases.into_iter().flatten() {
        if !forms.contains(&f) {
            forms.push(f);
        }
    }
    if forms.len() == 1 {
        hex(c)
    } else {
        format!("[{}]", forms.into_iter().map(hex).collect::<String>())
    }
}

/// A predefined JFlex class on the Basic Multilingual Plane.
fn predefined_class(name: &str) -> Result<String, String> {
    let property = match name {
        "letter" => r"\p{L}",
        "digit" => r"\p{Nd}",
        "uppercase" => r"\p{Uppercase}",
        _ => return Err(format!("unknown class [:{name}:]")),
    };
    Ok(format!(r"[{property}&&[\x00-\x{{FFFF}}]]"))
}

/// `[:name:]` at `chars[i]`: the name and the index after it.
fn predefined_at(chars: &[char], i: usize) -> Option<(String, usize)> {
    if chars.get(i + 1) != Some(&':') {
        return None;
    }
    let len = chars[i + 2..]
        .iter()
        .take_while(|c| c.is_ascii_lowercase())
        .count();
    let end = i + 2 + len;
    (len > 0 && chars.get(end) == Some(&':') && chars.get(end + 1) == Some(&']'))
        .then(|| (chars[i + 2..end].iter().collect(), end + 2))
}

/// Reads one possibly escaped character of JFlex notation at `chars[*i]`.
fn read_char(chars: &[char], i: &mut usize) -> Result<char, String> {
    let c = *chars.get(*i).ok_or("unexpected end")?;
    *i += 1;
    if c != '\\' {
        return Ok(c);
    }
    let e = *chars.get(*i).ok_or("dangling backslash")?;
    *i += 1;
    let digits = |i: &mut usize, n: usize, radix: u32| -> Result<char, String> {
        let s: String = chars
            .get(*i..*i + n)
            .ok_or("short escape")?
            .iter()
            .collect();
        *i += n;
        u32::from_str_radix(&s, radix)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(|| format!("bad escape {s}"))
    };
    Ok(match e {
        'u' => digits(i, 4, 16)?,
        'x' => digits(i, 2, 16)?,
        't' => '\t',
        'n' => '\n',
        'r' => '\r',
        'f' => '\x0C',
        'b' => '\x08',
        '0'..='7' => {
            let mut v = e.to_digit(8).unwrap_or(0);
            while let Some(d) = chars.get(*i).and_then(|c| c.to_digit(8)) {
                if v * 8 + d > 0o377 {
                    break;
                }
                v = v * 8 + d;
                *i += 1;
            }
            char::from_u32(v).ok_or("bad octal escape")?
        }
        other => other,
    })
}

impl Translator {
    fn new() -> Self {
        Self {
            macros: MACROS.iter().copied().collect(),
            done: HashMap::new(),
        }
    }

    fn expand(&mut self, name: &str) -> Result<String, String> {
        if let Some(done) = self.done.get(name) {
            return Ok(done.clone());
        }
        let (&key, &src) = self
            .macros
            .get_key_value(name)
            .ok_or_else(|| format!("unknown macro {{{name}}}"))?;
        let out = self.translate(src)?;
        self.done.insert(key, out.clone());
        Ok(out)
    }

    /// A character class `[...]` starting at `chars[*i] == '['`.
    fn class(&mut self, chars: &[char], i: &mut usize) -> Result<String, String> {
        *i += 1;
        let negated = chars.get(*i) == Some(&'^');
        if negated {
            *i += 1;
        }
        if chars.get(*i) == Some(&']') && negated {
            *i += 1;
            return Ok(r"(?s:.)".to_string()); // `[^]`: any character
        }
        let mut out = String::from(if negated { "[^" } else { "[" });
        loop {
            match chars.get(*i) {
                None => return Err("unterminated class".into()),
                Some(']') => {
                    *i += 1;
                    break;
                }
                Some(_) => {
                    let lo = read_char(chars, i)?;
                    out.push_str(&hex(lo));
                    if chars.get(*i) == Some(&'-') && chars.get(*i + 1).is_some_and(|&c| c != ']') {
                        *i += 1;
                        let hi = read_char(chars, i)?;
                        out.push('-');
                        out.push_str(&hex(hi));
                    }
                }
            }
        }
        out.push(']');
        Ok(out)
    }

    fn translate(&mut self, src: &str) -> Result<String, String> {
        let chars: Vec<char> = src.chars().collect();
        let mut out = String::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '[' if predefined_at(&chars, i).is_some() => {
                    let (name, end) = predefined_at(&chars, i).unwrap_or_default();
                    out.push_str(&predefined_class(&name)?);
                    i = end;
                }
                '[' => out.push_str(&self.class(&chars, &mut i)?),
                '{' => {
                    let end = (i..chars.len())
                        .find(|&j| chars[j] == '}')
                        .ok_or("unterminated {")?;
                    let inner: String = chars[i + 1..end].iter().collect();
                    if inner.chars().all(|c| c.is_ascii_digit() || c == ',') {
                        out.push_str(&format!("{{{inner}}}"));
                    } else {
                        out.push_str(&format!("(?:{})", self.expand(&inner)?));
                    }
                    i = end + 1;
                }
                '(' => {
                    out.push_str("(?:");
                    i += 1;
                }
                c @ (')' | '|' | '*' | '+' | '?') => {
                    out.push(c);
                    i += 1;
                }
                '.' => {
                    out.push_str(ANY_BUT_NEWLINE);
                    i += 1;
                }
                '~' => {
                    // JFlex's "up to": `~c` is everything up to and including the first `c`
                    // (only a single character follows `~` in this lexer).
                    i += 1;
                    let c = read_char(&chars, &mut i)?;
                    out.push_str(&format!("[^{}]*{}", hex(c), caseless_literal(c)));
                }
                '"' => {
                    i += 1;
                    while chars.get(i).is_some_and(|&c| c != '"') {
                        out.push_str(&caseless_literal(read_char(&chars, &mut i)?));
                    }
                    i += 1;
                }
                _ => {
                    let escaped = chars[i] == '\\';
                    let c = read_char(&chars, &mut i)?;
                    if escaped && !c.is_alphabetic() {
                        out.push_str(&hex(c));
                    } else {
                        out.push_str(&caseless_literal(c));
                    }
                }
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// The scanner

/// A rule ready to scan: the split of a trailing-context match needs `r1` and `r2` alone.
#[derive(Debug)]
struct Compiled {
    action: Action,
    /// For `r1/r2`: `^r1$`, `^r2$`, and `r2`'s length in bytes when fixed.
    trail: Option<(
        regex_automata::meta::Regex,
        regex_automata::meta::Regex,
        Option<usize>,
    )>,
}

/// The lexer: one lazy DFA over all rules (pattern `i` = rule `i`, `r1 r2` concatenated).
#[derive(Debug)]
struct Lexer {
    dfa: DFA,
    rules: Vec<Compiled>,
}

fn full_match(pattern: &str) -> Result<regex_automata::meta::Regex, String> {
    regex_automata::meta::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| e.to_string())
}

fn fixed_len(pattern: &str) -> Result<Option<usize>, String> {
    let hir = regex_automata::util::syntax::parse(pattern).map_err(|e| e.to_string())?;
    let props = hir.properties();
    Ok(match (props.minimum_len(), props.maximum_len()) {
        (Some(lo), Some(hi)) if lo == hi => Some(lo),
        _ => None,
    })
}

impl Lexer {
    fn build() -> Result<Self, String> {
        let mut translator = Translator::new();
        let mut patterns = Vec::with_capacity(RULES.len());
        let mut rules = Vec::with_capacity(RULES.len());
        for rule in RULES {
            let main = translator.translate(rule.main)?;
            let trail = match rule.trail {
                Some(trail) => {
                    let trail = translator.translate(trail)?;
                    patterns.push(format!("(?:{main})(?:{trail})"));
                    Some((full_match(&main)?, full_match(&trail)?, fixed_len(&trail)?))
                }
                None => {
                    patterns.push(main);
                    None
                }
            };
            rules.push(Compiled {
                action: rule.action,
                trail,
            });
        }
        let dfa = DFA::builder()
            .configure(
                DFA::config()
                    .match_kind(MatchKind::All)
                    .cache_capacity(64 << 20),
            )
            .build_many(&patterns)
            .map_err(|e| e.to_string())?;
        Ok(Self { dfa, rules })
    }

    fn get() -> &'static Self {
        static LEXER: OnceLock<Lexer> = OnceLock::new();
        // The rules are constants: failing to build them is a bug, caught by every test.
        LEXER.get_or_init(|| Self::build().expect("the PTBLexer rules translate and compile"))
    }

    /// JFlex's choice at `start`: the rule with the longest match (its trailing context
    /// included), the earliest rule on a tie; returns (rule, end of the whole match).
    fn longest(&self, cache: &mut Cache, text: &str, start: usize) -> Option<(usize, usize)> {
        let input = Input::new(text).range(start..).anchored(Anchored::Yes);
        let mut state = OverlappingState::start();
        let mut best: Option<(usize, usize)> = None;
        loop {
            // Errors come only from quit bytes or a cache that gives up, neither configured.
            if self
                .dfa
                .try_search_overlapping_fwd(cache, &input, &mut state)
                .is_err()
            {
                break;
            }
            let Some(m) = state.get_match() else { break };
            let (rule, end) = (m.pattern().as_usize(), m.offset());
            best = match best {
                Some((r, e)) if e > end || (e == end && r < rule) => Some((r, e)),
                _ => Some((rule, end)),
            };
        }
        best
    }

    /// Where `r1` ends in a match of `r1/r2` over `text[start..end]`: the longest `r1` after
    /// which `r2` matches the rest (JFlex's general look-ahead).
    fn split(&self, rule: usize, text: &str, start: usize, end: usize) -> usize {
        let Some((r1, r2, fixed)) = &self.rules[rule].trail else {
            return end;
        };
        if let Some(n) = *fixed
            && end >= start + n
            && text.is_char_boundary(end - n)
        {
            return end - n;
        }
        (start..=end)
            .rev()
            .filter(|&q| text.is_char_boundary(q))
            .find(|&q| r1.is_match(&text[start..q]) && r2.is_match(&text[q..end]))
            .unwrap_or(end)
    }

    /// Scans `text`, calling `emit` with each token (`None` for a line break).
    fn scan<'t>(
        &self,
        cache: &mut Cache,
        text: &'t str,
        mut emit: impl FnMut(Option<Cow<'t, str>>),
    ) {
        let bytes = text.as_bytes();
        let mut pos = 0;
        while pos < text.len() {
            // Fast path: an ASCII space or tab starts no rule but `{SPACES}`.
            if bytes[pos] == b' ' || bytes[pos] == b'\t' {
                pos += 1;
                continue;
            }
            let Some((rule, end)) = self.longest(cache, text, pos) else {
                // Cannot happen (`.` and `{NEWLINE}` match any character); skip one if it does.
                pos += text[pos..].chars().next().map_or(1, char::len_utf8);
                continue;
            };
            let tok_end = self.split(rule, text, pos, end);
            let yytext = &text[pos..tok_end];
            let (token, next) = apply(self.rules[rule].action, yytext, tok_end);
            match token {
                Emit::Token(t) => emit(Some(t)),
                Emit::Newline => emit(None),
                Emit::Nothing => {}
            }
            // Every rule consumes at least one character, so `next > pos`.
            pos = next.max(pos + 1);
        }
    }
}

enum Emit<'a> {
    Token(Cow<'a, str>),
    Newline,
    Nothing,
}

/// The action of a rule on `yytext` ending at `tok_end`: the token and where scanning resumes.
fn apply(action: Action, yytext: &str, tok_end: usize) -> (Emit<'_>, usize) {
    let tok = Emit::Token;
    match action {
        Text => (tok(Cow::Borrowed(yytext)), tok_end),
        PushBack(n) => {
            let keep = yytext.len().saturating_sub(n);
            (
                tok(Cow::Borrowed(&yytext[..keep])),
                tok_end - (yytext.len() - keep),
            )
        }
        Nbsp => (tok(Cow::Owned(yytext.replace(' ', "\u{A0}"))), tok_end),
        Fixed(s) => (tok(Cow::Borrowed(s)), tok_end),
        Amp => (tok(normalize_amp(yytext)), tok_end),
        SoftHyphens => (tok(remove_soft_hyphens(yytext)), tok_end),
        Quotes { left } => (tok(Cow::Owned(latex_quotes(yytext, left))), tok_end),
        Fractions => (tok(Cow::Owned(normalize_fractions(yytext))), tok_end),
        Currency => (tok(Cow::Owned(normalize_currency(yytext))), tok_end),
        Phone => {
            let t = yytext
                .replace(' ', "\u{A0}")
                .replace('(', "-LRB-")
                .replace(')', "-RRB-");
            (tok(Cow::Owned(t)), tok_end)
        }
        Parens => {
            let t = yytext.replace('(', "-LRB-").replace(')', "-RRB-");
            (tok(Cow::Owned(t)), tok_end)
        }
        Hyphens => {
            let t = if (3..=4).contains(&yytext.len()) {
                "--"
            } else {
                yytext
            };
            (tok(Cow::Borrowed(t)), tok_end)
        }
        Acronym => {
            // "I." etc.: the letter now, the period next time; "U.S.": all now, period again.
            if yytext.len() == 2 {
                (tok(Cow::Borrowed(&yytext[..1])), tok_end - 1)
            } else {
                (tok(Cow::Borrowed(yytext)), tok_end - 1)
            }
        }
        PeriodAgain => (tok(Cow::Borrowed(yytext)), tok_end - 1),
        Skip => (Emit::Nothing, tok_end),
        Newline => (Emit::Newline, tok_end),
    }
}

fn normalize_amp(s: &str) -> Cow<'_, str> {
    // `(?i:&amp;)` -> `&`
    if !s.contains('&') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        if rest.len() >= i + 5 && rest.as_bytes()[i..i + 5].eq_ignore_ascii_case(b"&amp;") {
            out.push('&');
            rest = &rest[i + 5..];
        } else {
            out.push('&');
            rest = &rest[i + 1..];
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

fn remove_soft_hyphens(s: &str) -> Cow<'_, str> {
    if !s.contains('\u{AD}') {
        return Cow::Borrowed(s);
    }
    let out: String = s.chars().filter(|&c| c != '\u{AD}').collect();
    // Java: "don't create an empty token"
    Cow::Owned(if out.is_empty() { "-".to_string() } else { out })
}

/// `latexQuotes(tok, probablyLeft)` of the lexer.
fn latex_quotes(s: &str, probably_left: bool) -> String {
    let (single, double) = if probably_left {
        ("`", "``")
    } else {
        ("'", "''")
    };
    let s = s
        .replace("&apos;", single)
        .replace('\'', single)
        .replace("&quot;", double)
        .replace('"', double);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\u{91}' | '\u{2018}' | '\u{201B}' | '\u{2039}' => out.push('`'),
            '\u{92}' | '\u{2019}' | '\u{203A}' => out.push('\''),
            '\u{93}' | '\u{201C}' | '\u{AB}' => out.push_str("``"),
            '\u{94}' | '\u{201D}' | '\u{BB}' => out.push_str("''"),
            c => out.push(c),
        }
    }
    out
}

fn normalize_fractions(s: &str) -> String {
    s.replace('\u{BC}', "1/4")
        .replace('\u{BD}', "1/2")
        .replace('\u{BE}', "3/4")
        .replace('\u{2153}', "1/3")
        .replace('\u{2154}', "2/3")
}

fn normalize_currency(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\u{A2}' => out.push_str("cents"),
            '\u{A3}' => out.push('#'),
            '\u{80}' | '\u{A4}' | '\u{20A0}' | '\u{20AC}' => out.push('$'),
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// pycocoevalcap's side

/// Python's `str.isspace` (what `rstrip()` and `split()` strip and split on).
pub(crate) fn python_isspace(c: char) -> bool {
    matches!(c, '\t'..='\r' | '\x1C'..='\x1F' | ' ' | '\u{85}' | '\u{A0}' | '\u{1680}')
        || matches!(
            c,
            '\u{2000}'..='\u{200A}' | '\u{2028}' | '\u{2029}' | '\u{202F}'
        )
        || matches!(c, '\u{205F}' | '\u{3000}')
}

/// Characters the jar takes as line breaks; pycocoevalcap replaces only `\n` (see module docs).
fn is_java_newline(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\x0B' | '\x0C' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// One output line of the jar -> pycocoevalcap's caption: `rstrip`, split on ' ', drop
/// [`PUNCTUATIONS`], join with ' '.
fn finish_line(line: &str) -> String {
    line.trim_end_matches(python_isspace)
        .split(' ')
        .filter(|w| !PUNCTUATIONS.contains(w))
        .collect::<Vec<_>>()
        .join(" ")
}

thread_local! {
    static CACHE: RefCell<Option<Cache>> = const { RefCell::new(None) };
}

/// PTB-tokenises captions as pycocoevalcap does with all of them in one call (one side of an
/// evaluation): the captions are scanned as the lines of one text, so a rule may look from the
/// end of one caption into the next (see the module docs). Returns one string per caption.
pub fn ptb_tokenize_batch<S: AsRef<str>>(captions: &[S]) -> Vec<String> {
    let mut text = String::with_capacity(captions.iter().map(|c| c.as_ref().len() + 1).sum());
    for (i, caption) in captions.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        text.extend(
            caption
                .as_ref()
                .chars()
                .map(|c| if is_java_newline(c) { ' ' } else { c }),
        );
    }
    let lexer = Lexer::get();
    let mut lines = vec![String::new(); captions.len()];
    let mut line = 0;
    CACHE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let cache = slot.get_or_insert_with(|| lexer.dfa.create_cache());
        lexer.scan(cache, &text, |token| match token {
            None => line += 1,
            Some(token) => {
                if let Some(out) = lines.get_mut(line) {
                    if !out.is_empty() {
                        out.push(' ');
                    }
                    // `-lowerCase`; a token holding a line break (see module docs) stays on
                    // the line where it starts.
                    out.extend(
                        token
                            .chars()
                            .flat_map(char::to_lowercase)
                            .map(|c| if c == '\n' { ' ' } else { c }),
                    );
                }
            }
        });
    });
    lines.iter().map(|l| finish_line(l)).collect()
}

/// PTB-tokenises one caption as pycocoevalcap would if it were the only caption of its side.
pub fn ptb_tokenize(caption: &str) -> String {
    ptb_tokenize_batch(&[caption]).pop().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_translates_and_compiles() {
        let lexer = Lexer::build().expect("rules compile");
        assert_eq!(lexer.rules.len(), RULES.len());
    }

    #[test]
    fn caseless_applies_outside_classes_only() {
        let mut t = Translator::new();
        assert_eq!(
            t.translate("a[b]").expect("translates"),
            r"[\x{61}\x{41}][\x{62}]"
        );
        assert_eq!(t.translate(r"\.").expect("translates"), r"\x{2E}");
    }

    proptest::proptest! {
        /// Any text scans without panicking, one output per caption, no line breaks inside.
        #[test]
        fn any_text_tokenises_caption_by_caption(
            captions in proptest::collection::vec("(?s).{0,40}", 1..5),
        ) {
            let out = ptb_tokenize_batch(&captions);
            proptest::prop_assert_eq!(out.len(), captions.len());
            proptest::prop_assert!(out.iter().all(|c| !c.contains('\n')));
        }
    }

    // The jar's output on these captions (also in tests/fixtures/.../ptb_tricky.json).
    #[test]
    fn contractions_possessives_and_brackets() {
        assert_eq!(
            ptb_tokenize("A man's dog doesn't (really) bark."),
            "a man 's dog does n't -lrb- really -rrb- bark"
        );
        assert_eq!(ptb_tokenize("I cannot go"), "i can not go");
    }
}
