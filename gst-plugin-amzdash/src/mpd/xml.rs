//! A small bounded XML tree built with quick-xml: names and attributes by local name, text
//! unescaped. The MPD model reads this tree, so namespace prefixes chosen by packagers never matter.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// Refuse deeper nesting than this: MPDs are about six levels deep; a bomb is not.
const MAX_DEPTH: usize = 32;
/// Refuse more elements than this (a long SegmentList of a 1 h track has ~1000).
const MAX_ELEMENTS: usize = 200_000;

#[derive(Debug, Clone, Default)]
pub struct Node {
    /// Local name (`default_KID` for `cenc:default_KID`).
    pub name: String,
    /// (local name, unescaped value); `xmlns` declarations are left out.
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
    pub text: String,
}

impl Node {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
}

fn local(name: &[u8]) -> String {
    let s = String::from_utf8_lossy(name);
    match s.rfind(':') {
        Some(i) => s[i + 1..].to_string(),
        None => s.into_owned(),
    }
}

fn start_node(e: &BytesStart) -> Result<Node, String> {
    let mut node = Node {
        name: local(e.name().as_ref()),
        ..Default::default()
    };
    for a in e.attributes() {
        let a = a.map_err(|err| format!("bad attribute in <{}>: {err}", node.name))?;
        let key = a.key.as_ref();
        if key == b"xmlns" || key.starts_with(b"xmlns:") {
            continue;
        }
        let v = a
            .unescape_value()
            .map_err(|err| format!("bad attribute value in <{}>: {err}", node.name))?;
        node.attrs.push((local(key), v.into_owned()));
    }
    Ok(node)
}

/// Parses a whole document into its root element.
pub fn parse(doc: &[u8]) -> Result<Node, String> {
    let mut reader = Reader::from_reader(doc);
    let mut stack: Vec<Node> = Vec::new();
    let mut count = 0usize;
    let mut buf = Vec::new();
    loop {
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("XML error at byte {}: {e}", reader.buffer_position()))?;
        match ev {
            Event::Start(e) => {
                count += 1;
                if stack.len() >= MAX_DEPTH || count > MAX_ELEMENTS {
                    return Err("XML nested too deeply or has too many elements".into());
                }
                stack.push(start_node(&e)?);
            }
            Event::Empty(e) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err("XML has too many elements".into());
                }
                let node = start_node(&e)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => return Ok(node),
                }
            }
            Event::End(_) => {
                let node = stack.pop().ok_or("unbalanced XML end tag")?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => return Ok(node),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    let s = t.unescape().map_err(|e| format!("bad XML text: {e}"))?;
                    top.text.push_str(s.trim());
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(String::from_utf8_lossy(&t).trim());
                }
            }
            Event::Eof => {
                return Err(if stack.is_empty() {
                    "empty document: no root element".into()
                } else {
                    "document ends inside an element (truncated?)".into()
                })
            }
            _ => {}
        }
        buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_names_and_unescaping() {
        let n = parse(br#"<a:MPD xmlns:a="x" b:k="1&amp;2"><c:X>t&lt;</c:X><Y/></a:MPD>"#).unwrap();
        assert_eq!(n.name, "MPD");
        assert_eq!(n.attr("k"), Some("1&2"));
        assert_eq!(n.child("X").unwrap().text, "t<");
        assert!(n.child("Y").is_some());
    }

    #[test]
    fn truncated_and_deep_documents_fail() {
        assert!(parse(b"<MPD><Period>").is_err());
        assert!(parse(b"").is_err());
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse(deep.as_bytes()).is_err());
    }
}
