//! Frame image bytes in MongoDB GridFS: the only code that talks to MongoDB.
//!
//! Files are written with majority write concern, so on a replica set an acknowledged upload
//! survives the loss of the primary. Every call is bounded by the store timeout: when MongoDB
//! is unreachable the caller gets [`GridFsError::Unavailable`] quickly, never a hang.

use std::time::Duration;

use futures::io::AsyncWriteExt;
use futures::{AsyncReadExt, TryStreamExt};
use mongodb::bson::{doc, oid::ObjectId, Bson, Document};
use mongodb::gridfs::{GridFsBucket, GridFsDownloadStream};
use mongodb::options::{ClientOptions, GridFsBucketOptions, ReadConcern, WriteConcern};
use mongodb::{Client, Database};

use secrecy::ExposeSecret;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum GridFsError {
    #[error("the frame store is unreachable")]
    Unavailable(#[source] anyhow::Error),
    #[error("no such file in the frame store")]
    NotFound,
    #[error("frame store failure")]
    Other(#[source] mongodb::error::Error),
}

impl From<mongodb::error::Error> for GridFsError {
    fn from(e: mongodb::error::Error) -> Self {
        use mongodb::error::{ErrorKind, GridFsErrorKind};
        match *e.kind {
            ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. } => GridFsError::Unavailable(e.into()),
            ErrorKind::GridFs(GridFsErrorKind::FileNotFound { .. }) => GridFsError::NotFound,
            _ if e.contains_label(mongodb::error::RETRYABLE_WRITE_ERROR) => {
                GridFsError::Unavailable(e.into())
            }
            _ => GridFsError::Other(e),
        }
    }
}

/// A handle on the deployment's GridFS bucket. Cheap to clone.
#[derive(Clone)]
pub struct FrameStore {
    db: Database,
    bucket: GridFsBucket,
    bucket_name: String,
    /// Whether [`FrameStore::ensure_indexes`] has run in this process.
    indexed: std::sync::Arc<tokio::sync::OnceCell<()>>,
    timeout: Duration,
}

/// A file as listed from the bucket (used by tests and by the orphan sweep).
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub id: ObjectId,
    pub length: u64,
    pub metadata: Option<Document>,
}

impl FrameStore {
    /// Builds the client without waiting for MongoDB: the server starts (and `/readyz` says
    /// why it is not ready) even when the store is down.
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let mut options = ClientOptions::parse(config.mongodb_url.expose_secret()).await?;
        options.app_name = Some("c3s".into());
        let timeout = config.store_timeout();
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout.min(Duration::from_secs(3)));
        let client = Client::with_options(options)?;
        let db = client.database(&config.mongodb_database);
        let bucket = db.gridfs_bucket(
            GridFsBucketOptions::builder()
                .bucket_name(config.gridfs_bucket.clone())
                .write_concern(WriteConcern::majority())
                .read_concern(ReadConcern::majority())
                .build(),
        );
        Ok(FrameStore {
            db,
            bucket,
            bucket_name: config.gridfs_bucket.clone(),
            indexed: std::sync::Arc::new(tokio::sync::OnceCell::new()),
            timeout,
        })
    }

    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, GridFsError>>,
    ) -> Result<T, GridFsError> {
        // Large files get more time: the timeout guards against a dead store, not a slow one.
        match tokio::time::timeout(self.timeout * 6, work).await {
            Ok(result) => result,
            Err(_) => Err(GridFsError::Unavailable(anyhow::anyhow!("timed out"))),
        }
    }

    pub async fn ping(&self) -> Result<(), GridFsError> {
        self.bounded(async {
            self.db.run_command(doc! { "ping": 1 }).await?;
            Ok(())
        })
        .await
    }

    /// Writes one file and returns its id. On any failure the chunks written so far are
    /// removed, so a failed put leaves nothing behind.
    pub async fn put(
        &self,
        filename: &str,
        metadata: Document,
        bytes: &[u8],
    ) -> Result<ObjectId, GridFsError> {
        let id = ObjectId::new();
        self.bounded(async {
            let mut upload = self
                .bucket
                .open_upload_stream(filename)
                .id(Bson::ObjectId(id))
                .metadata(metadata)
                .await?;
            let written = async {
                upload.write_all(bytes).await?;
                upload.close().await
            }
            .await;
            if let Err(e) = written {
                // abort removes the chunks; if the store is gone it fails too, and the
                // orphan sweep removes them later.
                let _ = upload.abort().await;
                return Err(GridFsError::Unavailable(e.into()));
            }
            Ok(id)
        })
        .await
    }

    /// Starts writing one file whose bytes arrive in pieces (a clip streamed as it is
    /// uploaded): [`Upload::write`] each, then [`Upload::finish`]; dropping it unfinished, or
    /// [`Upload::abort`], leaves nothing (or garbage the orphan sweep removes).
    pub async fn start_upload(
        &self,
        filename: &str,
        metadata: Document,
    ) -> Result<Upload, GridFsError> {
        self.start_upload_with_id(ObjectId::new(), filename, metadata)
            .await
    }

    /// [`FrameStore::start_upload`] under a given id (a restore keeps the ids rows name).
    pub async fn start_upload_with_id(
        &self,
        id: ObjectId,
        filename: &str,
        metadata: Document,
    ) -> Result<Upload, GridFsError> {
        self.bounded(self.ensure_indexes()).await?;
        Ok(Upload {
            id,
            filename: filename.to_owned(),
            metadata,
            chunks: self.collection("chunks"),
            files: self.collection("files"),
            piece: Vec::with_capacity(LARGE_FILE_CHUNK_BYTES as usize),
            batch: Vec::with_capacity(CHUNKS_PER_INSERT),
            next_n: 0,
            length: 0,
            inserting: tokio::task::JoinSet::new(),
            timeout: self.timeout * 6,
        })
    }

    fn collection(&self, suffix: &str) -> mongodb::Collection<Document> {
        self.db.collection_with_options(
            &format!("{}.{suffix}", self.bucket_name),
            mongodb::options::CollectionOptions::builder()
                .write_concern(WriteConcern::majority())
                .build(),
        )
    }

    /// The two indexes GridFS readers rely on, made once per process (the driver makes them
    /// when it writes a file itself; [`Upload`] writes the documents directly).
    async fn ensure_indexes(&self) -> Result<(), GridFsError> {
        use mongodb::IndexModel;
        self.indexed
            .get_or_try_init(|| async {
                self.collection("files")
                    .create_index(
                        IndexModel::builder()
                            .keys(doc! { "filename": 1, "uploadDate": 1 })
                            .build(),
                    )
                    .await?;
                self.collection("chunks")
                    .create_index(
                        IndexModel::builder()
                            .keys(doc! { "files_id": 1, "n": 1 })
                            .options(
                                mongodb::options::IndexOptions::builder()
                                    .unique(true)
                                    .build(),
                            )
                            .build(),
                    )
                    .await?;
                Ok::<(), GridFsError>(())
            })
            .await?;
        Ok(())
    }

    /// Opens a file for streaming; the caller reads it as a byte stream.
    pub async fn open(&self, id: ObjectId) -> Result<GridFsDownloadStream, GridFsError> {
        self.bounded(async { Ok(self.bucket.open_download_stream(Bson::ObjectId(id)).await?) })
            .await
    }

    /// Reads a whole file into memory (frames are bounded by the upload limit).
    pub async fn get(&self, id: ObjectId) -> Result<Vec<u8>, GridFsError> {
        self.bounded(async {
            let mut stream = self.bucket.open_download_stream(Bson::ObjectId(id)).await?;
            let mut bytes = Vec::new();
            stream
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| GridFsError::Unavailable(e.into()))?;
            Ok(bytes)
        })
        .await
    }

    /// Deletes a file and its chunks. Deleting a file that is already gone is not an error.
    pub async fn delete(&self, id: ObjectId) -> Result<(), GridFsError> {
        self.bounded(async {
            match self.bucket.delete(Bson::ObjectId(id)).await {
                Ok(()) => Ok(()),
                Err(e) => match GridFsError::from(e) {
                    GridFsError::NotFound => Ok(()),
                    other => Err(other),
                },
            }
        })
        .await
    }

    /// Every file in the bucket.
    pub async fn list(&self) -> Result<Vec<StoredFile>, GridFsError> {
        self.bounded(async {
            let files: Vec<_> = self.bucket.find(doc! {}).await?.try_collect().await?;
            Ok(files
                .into_iter()
                .filter_map(|f| {
                    Some(StoredFile {
                        id: f.id.as_object_id()?,
                        length: f.length,
                        metadata: f.metadata,
                    })
                })
                .collect())
        })
        .await
    }
}

/// The chunk size of files written piece by piece (clips, up to gigabytes): 1 MiB, a quarter
/// of the documents of the 255 KiB default (measured against SecantusDB: 108 → 135 MB/s).
const LARGE_FILE_CHUNK_BYTES: u32 = 1 << 20;

/// Chunks sent in one `insert` command, and inserts in flight at once (the driver's own upload
/// stream sends one chunk per round trip, one after the other). Against SecantusDB on the
/// same 2 cores, 4 × 4, 8 × 1 and 4 MiB chunks 2 × 2 came within the noise of one another
/// (1.2–1.7 s for 122 MB; the store's own CPU is half of it); a MongoDB on a machine of its
/// own gains from the overlap.
const CHUNKS_PER_INSERT: usize = 8;
const INSERTS_IN_FLIGHT: usize = 2;

/// One file being written to GridFS piece by piece: its chunk documents go in batches, a few
/// in flight at once; the file's document goes last, so the file exists only once every chunk
/// is stored. The documents are GridFS's own, so any GridFS reader reads the file.
pub struct Upload {
    pub id: ObjectId,
    filename: String,
    metadata: Document,
    chunks: mongodb::Collection<Document>,
    files: mongodb::Collection<Document>,
    /// The chunk being filled.
    piece: Vec<u8>,
    /// Full chunks not yet sent.
    batch: Vec<Document>,
    next_n: i32,
    length: u64,
    inserting: tokio::task::JoinSet<Result<(), GridFsError>>,
    timeout: Duration,
}

impl Upload {
    /// Takes the next piece; waits only while [`INSERTS_IN_FLIGHT`] inserts are under way
    /// (each bounded by the store's timeout).
    pub async fn write(&mut self, mut bytes: &[u8]) -> Result<(), GridFsError> {
        while !bytes.is_empty() {
            let room = LARGE_FILE_CHUNK_BYTES as usize - self.piece.len();
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            self.piece.extend_from_slice(now);
            bytes = later;
            if self.piece.len() == LARGE_FILE_CHUNK_BYTES as usize {
                self.end_chunk();
                if self.batch.len() == CHUNKS_PER_INSERT {
                    self.send_batch().await?;
                }
            }
        }
        Ok(())
    }

    fn end_chunk(&mut self) {
        let data = std::mem::replace(
            &mut self.piece,
            Vec::with_capacity(LARGE_FILE_CHUNK_BYTES as usize),
        );
        self.length += data.len() as u64;
        self.batch.push(doc! {
            "_id": ObjectId::new(),
            "files_id": self.id,
            "n": self.next_n,
            "data": mongodb::bson::Binary {
                subtype: mongodb::bson::spec::BinarySubtype::Generic,
                bytes: data,
            },
        });
        self.next_n += 1;
    }

    async fn send_batch(&mut self) -> Result<(), GridFsError> {
        while self.inserting.len() >= INSERTS_IN_FLIGHT {
            self.settle_one().await?;
        }
        let batch = std::mem::take(&mut self.batch);
        let chunks = self.chunks.clone();
        let timeout = self.timeout;
        self.inserting.spawn(async move {
            match tokio::time::timeout(timeout, chunks.insert_many(batch)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(GridFsError::from(e)),
                Err(_) => Err(GridFsError::Unavailable(anyhow::anyhow!("timed out"))),
            }
        });
        Ok(())
    }

    async fn settle_one(&mut self) -> Result<(), GridFsError> {
        match self.inserting.join_next().await {
            Some(Ok(result)) => result,
            Some(Err(e)) => Err(GridFsError::Unavailable(e.into())),
            None => Ok(()),
        }
    }

    /// Writes what is left and the file's document: the file exists from here on.
    pub async fn finish(mut self) -> Result<ObjectId, GridFsError> {
        let written = async {
            if !self.piece.is_empty() {
                self.end_chunk();
            }
            if !self.batch.is_empty() {
                self.send_batch().await?;
            }
            while !self.inserting.is_empty() {
                self.settle_one().await?;
            }
            let file = doc! {
                "_id": self.id,
                "length": self.length as i64,
                "chunkSize": LARGE_FILE_CHUNK_BYTES as i32,
                "uploadDate": mongodb::bson::DateTime::now(),
                "filename": &self.filename,
                "metadata": self.metadata.clone(),
            };
            match tokio::time::timeout(self.timeout, self.files.insert_one(file)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(GridFsError::from(e)),
                Err(_) => Err(GridFsError::Unavailable(anyhow::anyhow!("timed out"))),
            }
        }
        .await;
        match written {
            Ok(()) => Ok(self.id),
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }

    /// Removes the chunks written so far (if the store is gone this fails too, and the
    /// orphan sweep removes them later).
    pub async fn abort(mut self) {
        self.inserting.abort_all();
        while self.inserting.join_next().await.is_some() {}
        let _ = tokio::time::timeout(
            self.timeout,
            self.chunks.delete_many(doc! { "files_id": self.id }),
        )
        .await;
    }
}

/// The frame cache reads frame bytes from GridFS, by the id a frame row names.
impl crate::dataplane::framecache::FrameSource for FrameStore {
    fn fetch<'a>(
        &'a self,
        stored_id: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Vec<u8>, crate::dataplane::framecache::FetchError>>
    {
        Box::pin(async move {
            let id = ObjectId::parse_str(stored_id)?;
            Ok(self.get(id).await?)
        })
    }

    fn fetch_to_file<'a>(
        &'a self,
        stored_id: &'a str,
        path: &'a std::path::Path,
    ) -> futures::future::BoxFuture<'a, Result<(), crate::dataplane::framecache::FetchError>> {
        Box::pin(async move {
            use tokio_util::compat::FuturesAsyncReadCompatExt;
            let id = ObjectId::parse_str(stored_id)?;
            let stream = self.open(id).await?;
            let mut reader = tokio::io::BufReader::with_capacity(256 * 1024, stream.compat());
            let mut file = tokio::fs::File::create(path).await?;
            tokio::io::copy_buf(&mut reader, &mut file).await?;
            tokio::io::AsyncWriteExt::flush(&mut file).await?;
            Ok(())
        })
    }
}
