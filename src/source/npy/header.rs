//! The `.npy` header: its length checked against the limits and the file before it is read,
//! the Python literal's nesting before py_literal parses it, its keys, dtype and shape.

use std::borrow::Cow;

use py_literal::Value;

use super::*;

/// Parses and checks the header of a complete `.npy` file held in memory (`bytes` is the whole
/// file). The same checks as [`OpenArray::open`] apply, with `bytes.len()` as the file size.
/// Returns the array description and the count of trailing bytes after the data.
pub fn parse_header(bytes: &[u8], limits: &Limits) -> Result<(ArrayInfo, u64), String> {
    let header = read_header(&mut &bytes[..], bytes.len() as u64, limits)?;
    Ok((header.info, header.trailing))
}

/// Reads and checks a `.npy` header from `r`, whose total length is `total` bytes.
///
/// Lengths are checked against `limits` and `total` before the header buffer is allocated.
pub(crate) fn read_header<R: Read>(
    r: &mut R,
    total: u64,
    limits: &Limits,
) -> Result<Header, String> {
    let eof = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            "file changed while reading: the header ended early".to_string()
        } else {
            format!("read error: {}", io_message(&e))
        }
    };
    let mut prefix = [0u8; 12];
    let have = total.min(10) as usize;
    r.read_exact(&mut prefix[..have]).map_err(eof)?;
    let m = have.min(MAGIC.len());
    if prefix[..m] != MAGIC[..m] || have == 0 {
        return Err("not a .npy file (bad magic bytes)".into());
    }
    if have < 10 {
        return Err(format!("too short to be a .npy file ({total} bytes)"));
    }
    let (major, minor) = (prefix[6], prefix[7]);
    let (header_len, prefix_len) = match (major, minor) {
        (1, 0) => (u64::from(u16::from_le_bytes([prefix[8], prefix[9]])), 10u64),
        (2, 0) | (3, 0) => {
            if total < 12 {
                return Err(format!("too short to be a .npy file ({total} bytes)"));
            }
            r.read_exact(&mut prefix[10..12]).map_err(eof)?;
            let len = u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
            (u64::from(len), 12u64)
        }
        _ => return Err(format!("unsupported .npy format version {major}.{minor}")),
    };
    if header_len > limits.max_header_bytes as u64 {
        return Err(format!(
            "header length {header_len} bytes exceeds the limit of {} bytes \
             (raise it with --max-header-bytes)",
            limits.max_header_bytes
        ));
    }
    let data_offset = prefix_len + header_len;
    if data_offset > total {
        return Err(format!(
            "header length {header_len} runs past the end of the file ({total} bytes)"
        ));
    }
    let mut bytes = vec![0u8; header_len as usize];
    r.read_exact(&mut bytes).map_err(eof)?;
    let text = if major == 3 {
        String::from_utf8(bytes).map_err(|_| "header is not valid UTF-8".to_string())?
    } else {
        // Versions 1 and 2 are latin-1.
        bytes.iter().map(|&b| char::from(b)).collect()
    };
    let info = parse_header_dict(&text)?;
    let data_bytes = info
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|n| n.checked_mul(info.dtype.size()))
        .map(|b| b as u64)
        .ok_or_else(|| {
            format!(
                "shape {} overflows: too many elements",
                fmt_shape(&info.shape)
            )
        })?;
    let available = total - data_offset;
    if data_bytes > available {
        return Err(format!(
            "truncated: header says {data_bytes} bytes of data, file has {available}"
        ));
    }
    Ok(Header {
        info,
        data_offset,
        data_bytes,
        trailing: available - data_bytes,
    })
}

fn fmt_shape<D: std::fmt::Display>(shape: &[D]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => {
            let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            format!("({})", parts.join(", "))
        }
    }
}

/// Parses the header dict: exactly the keys `descr`, `fortran_order` and `shape`.
///
/// The literal is parsed by py_literal (the parser npyz uses) once [`check_literal`] has bounded
/// its nesting; the dict is checked here rather than by npyz's `NpyHeader`, which ignores unknown
/// keys, keeps the last of a repeated key, accepts a list as the shape, and multiplies the shape
/// out unchecked (a panic in debug builds, a wrapped count in release ones).
fn parse_header_dict(text: &str) -> Result<ArrayInfo, String> {
    let text = check_literal(text)?;
    let value: Value = text.parse().map_err(|e| malformed(&syntax_error(&e)))?;
    let Value::Dict(items) = value else {
        return Err("header is not a dict".into());
    };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    for (key, value) in items {
        let Value::String(key) = key else {
            return Err("header dict has a key that is not a string".into());
        };
        let slot = match key.as_str() {
            "descr" => &mut descr,
            "fortran_order" => &mut fortran,
            "shape" => &mut shape,
            _ => return Err(format!("header has unexpected key '{key}'")),
        };
        if slot.replace(value).is_some() {
            return Err(format!("header has key '{key}' twice"));
        }
    }
    let missing = |k: &str| format!("header is missing key '{k}'");
    let descr = descr.ok_or_else(|| missing("descr"))?;
    let fortran = fortran.ok_or_else(|| missing("fortran_order"))?;
    let shape = shape.ok_or_else(|| missing("shape"))?;

    let (dtype, big_endian, descr) = match descr {
        Value::String(s) => parse_descr(&s)?,
        Value::List(_) => return Err("structured dtype (a list of fields) is not supported".into()),
        _ => return Err("descr is not a dtype string".into()),
    };
    let Value::Boolean(fortran_order) = fortran else {
        return Err("fortran_order is not True or False".into());
    };
    let Value::Tuple(dims) = shape else {
        return Err("shape is not a tuple".into());
    };
    let mut shape = Vec::with_capacity(dims.len());
    for d in &dims {
        let Value::Integer(n) = d else {
            return Err("shape is not a tuple of non-negative integers".into());
        };
        if n.cmp(&Default::default()).is_lt() {
            return Err("shape is not a tuple of non-negative integers".into());
        }
        match usize::try_from(n) {
            Ok(n) => shape.push(n),
            Err(_) => {
                let shown: Vec<String> = dims
                    .iter()
                    .map(|d| match d {
                        Value::Integer(n) => n.to_string(),
                        _ => "?".into(),
                    })
                    .collect();
                return Err(format!(
                    "shape {} overflows: too many elements",
                    fmt_shape(&shown)
                ));
            }
        }
    }
    Ok(ArrayInfo {
        dtype,
        big_endian,
        shape,
        fortran_order,
        descr,
    })
}

fn malformed(what: &str) -> String {
    format!("header dict is malformed: {what}")
}

/// py_literal's error in one line: its syntax errors are pest's multi-line report, of which the
/// position is kept.
fn syntax_error(e: &py_literal::ParseError) -> String {
    match e {
        py_literal::ParseError::Syntax(report) => {
            let at = report
                .split_once("--> ")
                .and_then(|(_, r)| r.split_once(['\n', ' ']))
                .and_then(|(at, _)| at.split_once(':'));
            match at {
                Some(("1", column)) => format!("not a Python literal at column {column}"),
                Some((line, column)) => {
                    format!("not a Python literal at line {line}, column {column}")
                }
                None => "not a Python literal".into(),
            }
        }
        other => other.to_string(),
    }
}

/// Nesting allowed in a header literal; a dict or set counts twice. A numpy header nests 3 deep
/// (a dict, then its shape tuple), a structured dtype 4 (a list of field tuples).
///
/// The bound is on time as well as stack: py_literal's grammar parses the last item of a list or
/// tuple twice and retries a failed dict as a set, so each level can double (a dict triple) the
/// work: 20 nested lists took 8 s to parse, 14 nested braces 33 s.
const MAX_DEPTH: usize = 4;

/// Checks the header text before py_literal parses it: a dict, brackets balanced and nested at
/// most [`MAX_DEPTH`] deep, strings closed on their line. Returns the text trimmed and without
/// Python 2 long suffixes (`(2L, 3L)`, written by numpy under Python 2), which numpy's own reader
/// drops the same way.
///
/// Strings are delimited as py_literal delimits them (a backslash escapes the next character; its
/// `\N{...}` escape, which may span quotes, is refused), so no bracket it parses is missed here.
fn check_literal(text: &str) -> Result<Cow<'_, str>, String> {
    let text = text.trim_matches([' ', '\t', '\n', '\r', '\x0c']);
    if !text.starts_with('{') {
        return Err("header is not a dict".into());
    }
    let weight = |c: char| if c == '{' { 2 } else { 1 };
    let mut open: Vec<char> = Vec::new();
    let mut depth = 0;
    let mut long_suffixes = Vec::new();
    let mut after_digit = false;
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' | '"' => loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'N')) => return Err(malformed("unsupported \\N escape")),
                        Some(_) => {}
                        None => return Err(malformed("unterminated string")),
                    },
                    Some((_, q)) if q == c => break,
                    Some((_, '\n' | '\r')) | None => {
                        return Err(malformed("unterminated string"));
                    }
                    Some(_) => {}
                }
            },
            '(' | '[' | '{' => {
                depth += weight(c);
                if depth > MAX_DEPTH {
                    return Err(malformed("nested too deeply"));
                }
                open.push(c);
            }
            ')' | ']' | '}' => {
                match open.pop() {
                    Some(o) if closer(o) == c => depth -= weight(o),
                    _ => return Err(malformed(&format!("unexpected '{c}'"))),
                }
                if open.is_empty() && i + 1 < text.len() {
                    return Err(malformed("unexpected text after the dict"));
                }
            }
            'L' | 'l' if after_digit => long_suffixes.push(i),
            _ => {}
        }
        after_digit = c.is_ascii_digit();
    }
    if let Some(&o) = open.last() {
        return Err(malformed(&format!("expected ',' or '{}'", closer(o))));
    }
    if long_suffixes.is_empty() {
        return Ok(Cow::Borrowed(text));
    }
    let mut kept = String::with_capacity(text.len());
    let mut from = 0;
    for i in long_suffixes {
        kept.push_str(&text[from..i]);
        from = i + 1;
    }
    kept.push_str(&text[from..]);
    Ok(Cow::Owned(kept))
}

fn closer(open: char) -> char {
    match open {
        '(' => ')',
        '[' => ']',
        _ => '}',
    }
}

/// Maps a numpy dtype string (`<f4`, `|V2`, ...) to a [`DType`], its byte order, and the dtype
/// string as numpy writes it (quoted). npyz's [`TypeStr`] parses it; here the kinds we refuse are
/// named in the message whether or not npyz accepts their spelling.
///
/// numpy has no bfloat16: `ml_dtypes.bfloat16` arrays are saved as 2-byte void (`<V2`/`|V2`),
/// so 2-byte void is read as bfloat16. Void has no byte order in numpy: `|V2` is taken in the
/// machine's order, and `<V2`/`>V2` as written.
fn parse_descr(s: &str) -> Result<(DType, bool, String), String> {
    let (ordered, rest) = match s.strip_prefix(['<', '>', '|', '=']) {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let mut chars = rest.chars();
    let kind = chars.next();
    let size = chars.as_str();
    let unsupported = |what: &str| format!("{what} dtype '{s}' is not supported");
    match kind {
        Some('O') => {
            return Err(format!(
                "object dtype '{s}' (pickled Python objects) is not supported; pickles are never loaded"
            ));
        }
        Some('c') => return Err(unsupported("complex")),
        Some('U' | 'S' | 'a') => return Err(unsupported("string")),
        Some('M') => return Err(unsupported("datetime")),
        Some('m') => return Err(unsupported("timedelta")),
        _ => {}
    }
    let float_size = kind == Some('f') && ordered && size.bytes().all(|b| b.is_ascii_digit());
    let ts: TypeStr = s.parse().map_err(|_| {
        if float_size {
            unsupported("float")
        } else {
            format!("unknown dtype '{s}'")
        }
    })?;
    let dtype = match (ts.type_char(), ts.size_field()) {
        (TypeChar::Float, 2) => DType::F16,
        (TypeChar::Float, 4) => DType::F32,
        (TypeChar::Float, 8) => DType::F64,
        (TypeChar::Float, _) => return Err(unsupported("float")),
        (TypeChar::Int, 1) => DType::I8,
        (TypeChar::Int, 2) => DType::I16,
        (TypeChar::Int, 4) => DType::I32,
        (TypeChar::Int, 8) => DType::I64,
        (TypeChar::Uint, 1) => DType::U8,
        (TypeChar::Uint, 2) => DType::U16,
        (TypeChar::Uint, 4) => DType::U32,
        (TypeChar::Uint, 8) => DType::U64,
        (TypeChar::Bool, 1) => DType::Bool,
        (TypeChar::RawData, 2) => DType::BF16,
        (TypeChar::RawData, _) => {
            return Err(format!(
                "void dtype '{s}' is not supported (only 2-byte void, read as bfloat16)"
            ));
        }
        _ => return Err(format!("unknown dtype '{s}'")),
    };
    let big_endian = dtype.size() > 1
        && match ts.endianness() {
            Endianness::Big => true,
            Endianness::Little => false,
            Endianness::Irrelevant => cfg!(target_endian = "big"),
        };
    Ok((dtype, big_endian, npyz::DType::Plain(ts).descr()))
}
