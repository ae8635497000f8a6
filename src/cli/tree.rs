//! Any `Serialize` value as an ordered tree, for display. JSON loses two things a table needs:
//! the declaration order of a message's fields (serde_json's `Value` sorts object keys) and
//! whether an object is a message or a map. This serializer keeps both.

use serde::Serialize;
use serde::ser;

/// A serialised value.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Text(String),
    List(Vec<Node>),
    /// A message (struct): its fields in declaration order.
    Record(Vec<(String, Node)>),
    /// A map: its entries sorted by key.
    Map(Vec<(String, Node)>),
    /// A number to show with a fixed count of decimals (set by a view, never serialised).
    Fixed(f64, usize),
}

impl Node {
    /// The tree of `value`.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Result<Node, TreeError> {
        value.serialize(Tree)
    }

    /// The value of field `name`, if this is a message or map that has it.
    pub fn field(&self, name: &str) -> Option<&Node> {
        match self {
            Node::Record(fields) | Node::Map(fields) => {
                fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
            }
            _ => None,
        }
    }

    /// Whether this is a number.
    pub fn is_number(&self) -> bool {
        matches!(self, Node::Int(_) | Node::Float(_) | Node::Fixed(..))
    }
}

/// Why a value could not be turned into a tree.
#[derive(Debug)]
pub struct TreeError(String);

impl std::fmt::Display for TreeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TreeError {}

impl ser::Error for TreeError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        TreeError(msg.to_string())
    }
}

/// The serializer producing a [`Node`].
struct Tree;

/// Collects the items of a sequence or tuple (with the variant's name for tuple variants).
struct Items {
    items: Vec<Node>,
    variant: Option<&'static str>,
}

/// Collects the fields of a struct (with the variant's name for struct variants).
struct Fields {
    fields: Vec<(String, Node)>,
    variant: Option<&'static str>,
}

/// Collects the entries of a map.
struct Entries {
    entries: Vec<(String, Node)>,
    key: Option<String>,
}

fn wrap(variant: Option<&'static str>, node: Node) -> Node {
    match variant {
        Some(name) => Node::Record(vec![(name.to_owned(), node)]),
        None => node,
    }
}

fn key_text(node: Node) -> String {
    match node {
        Node::Text(s) => s,
        Node::Int(i) => i.to_string(),
        Node::Float(f) => f.to_string(),
        Node::Bool(b) => b.to_string(),
        Node::Null => String::new(),
        other => format!("{other:?}"),
    }
}

/// Serializers of numbers that all become one kind of [`Node`].
macro_rules! numbers_of_kind {
    ($kind:ident: $($method:ident($number:ty)),*) => {$(
        fn $method(self, v: $number) -> Result<Node, TreeError> {
            Ok(Node::$kind(v.into()))
        }
    )*};
}

impl ser::Serializer for Tree {
    type Ok = Node;
    type Error = TreeError;
    type SerializeSeq = Items;
    type SerializeTuple = Items;
    type SerializeTupleStruct = Items;
    type SerializeTupleVariant = Items;
    type SerializeMap = Entries;
    type SerializeStruct = Fields;
    type SerializeStructVariant = Fields;

    fn serialize_bool(self, v: bool) -> Result<Node, TreeError> {
        Ok(Node::Bool(v))
    }
    numbers_of_kind!(Int:
        serialize_i8(i8), serialize_i16(i16), serialize_i32(i32), serialize_i64(i64),
        serialize_u8(u8), serialize_u16(u16), serialize_u32(u32), serialize_u64(u64));
    numbers_of_kind!(Float: serialize_f32(f32), serialize_f64(f64));
    fn serialize_char(self, v: char) -> Result<Node, TreeError> {
        Ok(Node::Text(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Node, TreeError> {
        Ok(Node::Text(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Node, TreeError> {
        Ok(Node::Text(format!("<{} bytes>", v.len())))
    }
    fn serialize_none(self) -> Result<Node, TreeError> {
        Ok(Node::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Node, TreeError> {
        value.serialize(Tree)
    }
    fn serialize_unit(self) -> Result<Node, TreeError> {
        Ok(Node::Null)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Node, TreeError> {
        Ok(Node::Null)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Node, TreeError> {
        Ok(Node::Text(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Node, TreeError> {
        value.serialize(Tree)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Node, TreeError> {
        Ok(wrap(Some(variant), value.serialize(Tree)?))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Items, TreeError> {
        Ok(Items::new(len.unwrap_or(0), None))
    }
    fn serialize_tuple(self, len: usize) -> Result<Items, TreeError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Items, TreeError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Items, TreeError> {
        Ok(Items::new(len, Some(variant)))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Entries, TreeError> {
        Ok(Entries {
            entries: Vec::new(),
            key: None,
        })
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Fields, TreeError> {
        Ok(Fields::new(len, None))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Fields, TreeError> {
        Ok(Fields::new(len, Some(variant)))
    }
}

impl Items {
    fn new(len: usize, variant: Option<&'static str>) -> Items {
        Items {
            items: Vec::with_capacity(len),
            variant,
        }
    }

    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TreeError> {
        self.items.push(value.serialize(Tree)?);
        Ok(())
    }

    fn done(self) -> Node {
        wrap(self.variant, Node::List(self.items))
    }
}

/// serde's four kinds of sequence each push their elements onto [`Items`].
macro_rules! sequence_of_items {
    ($($kind:ident :: $element:ident),*) => {$(
        impl ser::$kind for Items {
            type Ok = Node;
            type Error = TreeError;
            fn $element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TreeError> {
                self.push(value)
            }
            fn end(self) -> Result<Node, TreeError> {
                Ok(self.done())
            }
        }
    )*};
}

sequence_of_items!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl Fields {
    fn new(len: usize, variant: Option<&'static str>) -> Fields {
        Fields {
            fields: Vec::with_capacity(len),
            variant,
        }
    }

    fn push<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), TreeError> {
        self.fields.push((key.to_owned(), value.serialize(Tree)?));
        Ok(())
    }

    fn done(self) -> Node {
        wrap(self.variant, Node::Record(self.fields))
    }
}

/// A struct and a struct variant both push their fields onto [`Fields`].
macro_rules! record_of_fields {
    ($($kind:ident),*) => {$(
        impl ser::$kind for Fields {
            type Ok = Node;
            type Error = TreeError;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), TreeError> {
                self.push(key, value)
            }
            fn end(self) -> Result<Node, TreeError> {
                Ok(self.done())
            }
        }
    )*};
}

record_of_fields!(SerializeStruct, SerializeStructVariant);

impl ser::SerializeMap for Entries {
    type Ok = Node;
    type Error = TreeError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), TreeError> {
        self.key = Some(key_text(key.serialize(Tree)?));
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TreeError> {
        let key = self
            .key
            .take()
            .ok_or_else(|| TreeError("map value without a key".to_owned()))?;
        self.entries.push((key, value.serialize(Tree)?));
        Ok(())
    }
    fn end(mut self) -> Result<Node, TreeError> {
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Node::Map(self.entries))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Serialize)]
    struct Message {
        zeta: u32,
        alpha: Option<String>,
        tags: Vec<&'static str>,
        labels: HashMap<&'static str, &'static str>,
    }

    #[test]
    fn keeps_field_order_and_sorts_maps() -> Result<(), TreeError> {
        let node = Node::of(&Message {
            zeta: 1,
            alpha: None,
            tags: vec!["a"],
            labels: HashMap::from([("b", "2"), ("a", "1")]),
        })?;
        assert_eq!(
            node,
            Node::Record(vec![
                ("zeta".into(), Node::Int(1)),
                ("alpha".into(), Node::Null),
                ("tags".into(), Node::List(vec![Node::Text("a".into())])),
                (
                    "labels".into(),
                    Node::Map(vec![
                        ("a".into(), Node::Text("1".into())),
                        ("b".into(), Node::Text("2".into())),
                    ])
                ),
            ])
        );
        Ok(())
    }
}
