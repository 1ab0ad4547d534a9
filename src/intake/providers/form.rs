//! HTML form bodies as providers post them: `multipart/form-data` (RFC 7578) and
//! `application/x-www-form-urlencoded` (WHATWG URL, "application/x-www-form-urlencoded").
//! The whole body is already in memory and capped; parsing only indexes it.

use bytes::Bytes;

/// Most fields one form may carry: the MIME part limit plus the providers' fixed fields.
pub const MAX_FIELDS: usize = 2_100;

/// One form field: a value, or a file with its name and declared type.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub file_name: Option<String>,
    /// The part's `Content-Type`, lower case, when it declared one.
    pub content_type: Option<String>,
    pub bytes: Bytes,
}

/// A parsed form, fields in their order.
#[derive(Debug, Default)]
pub struct Form {
    pub fields: Vec<Field>,
}

impl Form {
    /// Parses `body` by its `Content-Type`. Errors say what is wrong, for a 4xx answer.
    pub async fn parse(content_type: &str, body: Bytes) -> Result<Self, String> {
        let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match media.as_str() {
            "multipart/form-data" => Self::multipart(content_type, body).await,
            "application/x-www-form-urlencoded" => Self::urlencoded(&body),
            "" => Err("missing Content-Type: expected multipart/form-data".into()),
            other => Err(format!("Content-Type {other} is not multipart/form-data")),
        }
    }

    async fn multipart(content_type: &str, body: Bytes) -> Result<Self, String> {
        let boundary = multer::parse_boundary(content_type)
            .map_err(|_| "multipart/form-data without a boundary parameter".to_owned())?;
        let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
        let mut multipart = multer::Multipart::new(stream, boundary);
        let mut fields = Vec::new();
        loop {
            let field = match multipart.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err(e) => return Err(format!("malformed multipart/form-data: {e}")),
            };
            if fields.len() == MAX_FIELDS {
                return Err(format!("more than {MAX_FIELDS} form fields"));
            }
            let name = field.name().unwrap_or("").to_owned();
            let file_name = field.file_name().map(str::to_owned);
            let content_type = field.content_type().map(|m| m.essence_str().to_ascii_lowercase());
            let bytes = field.bytes().await.map_err(|e| format!("malformed multipart/form-data: {e}"))?;
            fields.push(Field { name, file_name, content_type, bytes });
        }
        if fields.is_empty() {
            return Err("multipart/form-data body has no fields".into());
        }
        Ok(Self { fields })
    }

    fn urlencoded(body: &[u8]) -> Result<Self, String> {
        let mut fields = Vec::new();
        for (name, value) in form_urlencoded::parse(body) {
            if fields.len() == MAX_FIELDS {
                return Err(format!("more than {MAX_FIELDS} form fields"));
            }
            fields.push(Field {
                name: name.into_owned(),
                file_name: None,
                content_type: None,
                bytes: Bytes::from(value.into_owned()),
            });
        }
        Ok(Self { fields })
    }

    /// The first field of that name.
    pub fn get(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The first field of that name as text (invalid UTF-8 replaced).
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name).map(|f| String::from_utf8_lossy(&f.bytes).into_owned())
    }

    /// The field as text, or an error naming it.
    pub fn require(&self, name: &str) -> Result<String, String> {
        self.text(name).ok_or_else(|| format!("missing form field {name:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn multipart_fields_keep_file_names_and_types() {
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"subject\"\r\n\r\nHi there\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"attachment-1\"; filename=\"a.txt\"\r\n\
                    Content-Type: text/plain\r\n\r\nfile body\r\n--XyZ--\r\n";
        let form = Form::parse("multipart/form-data; boundary=XyZ", Bytes::from(body)).await.expect("parses");
        assert_eq!(form.text("subject").as_deref(), Some("Hi there"));
        let file = form.get("attachment-1").expect("file");
        assert_eq!(
            (file.file_name.as_deref(), file.content_type.as_deref()),
            (Some("a.txt"), Some("text/plain"))
        );
        assert_eq!(&file.bytes[..], b"file body");
    }

    #[tokio::test]
    async fn urlencoded_and_bad_bodies() {
        let form =
            Form::parse("application/x-www-form-urlencoded", Bytes::from("a=1&b=x%20y")).await.expect("ok");
        assert_eq!(form.text("b").as_deref(), Some("x y"));
        assert!(Form::parse("application/json", Bytes::from("{}")).await.is_err());
        assert!(Form::parse("multipart/form-data", Bytes::from("x")).await.is_err(), "no boundary");
        let truncated = "--XyZ\r\nContent-Disposition: form-data; name=\"subject\"\r\n\r\nHi";
        let err =
            Form::parse("multipart/form-data; boundary=XyZ", Bytes::from(truncated)).await.expect_err("bad");
        assert!(err.contains("malformed"), "{err}");
    }
}
