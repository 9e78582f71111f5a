use std::fmt;

use crate::common::counter::hardware_counter::HardwareCounterCell;
use crate::segment::common::operation_error::{OperationError, OperationResult};
use crate::shard::operations::vector_name_ops::VectorNameConfig;
use crate::shard::operations::{CollectionUpdateOperations, VectorNameOperations};
use crate::shard::update::*;
use crate::shard::wal::WalRawRecord;

use crate::edge::EdgeShard;
use crate::edge::config::vectors::{EdgeSparseVectorParams, EdgeVectorParams};

impl EdgeShard {
    pub fn update(&self, operation: CollectionUpdateOperations) -> OperationResult<()> {
        let record = WalRawRecord::new(&operation).map_err(service_error)?;

        let mut wal = self.wal.lock();

        let operation_id = wal.write(&record).map_err(service_error)?;
        self.apply(operation_id, operation)
    }

    /// aigentable patch: applies the updates the WAL holds past its last
    /// acknowledgement (every one since the last `flush`), in order. Segments
    /// skip what they already hold: a point whose version is newer than an
    /// operation ignores it. An update that failed when it was made (its
    /// record is written first) fails again and is skipped, as Qdrant's own
    /// WAL recovery does; a failure of the storage itself stops the load.
    pub(crate) fn replay_wal(&self) -> OperationResult<u64> {
        let wal = self.wal.lock();
        let mut replayed = 0;
        for record in wal.read_all(false) {
            let (operation_id, operation) = record.map_err(service_error)?;
            match self.apply(operation_id, operation) {
                Ok(()) => replayed += 1,
                Err(
                    err @ (OperationError::ServiceError { .. }
                    | OperationError::InconsistentStorage { .. }
                    | OperationError::OutOfMemory { .. }
                    | OperationError::Cancelled { .. }
                    | OperationError::Timeout { .. }),
                ) => return Err(err),
                Err(err) => {
                    log::warn!("skipping WAL record {operation_id}, which fails again: {err}");
                }
            }
        }
        Ok(replayed)
    }

    /// aigentable patch: makes every update made so far durable by syncing
    /// the WAL alone. The segments stay as they are in memory; a later
    /// `flush` writes them, and a load replays what they had not yet
    /// written ([`Self::replay_wal`]).
    pub fn flush_wal(&self) -> OperationResult<()> {
        self.wal.lock().flush().map_err(service_error)
    }

    fn apply(
        &self,
        operation_id: u64,
        operation: CollectionUpdateOperations,
    ) -> OperationResult<()> {
        let hw_counter = HardwareCounterCell::disposable();
        let _update_guard = self.segments.acquire_updates_lock();

        let segments_guard = self.segments.read();

        let result = match operation {
            CollectionUpdateOperations::PointOperation(point_operation) => {
                process_point_operation(&segments_guard, operation_id, point_operation, &hw_counter)
            }
            CollectionUpdateOperations::VectorOperation(vector_operation) => {
                process_vector_operation(
                    &segments_guard,
                    operation_id,
                    vector_operation,
                    &hw_counter,
                )
            }
            CollectionUpdateOperations::PayloadOperation(payload_operation) => {
                process_payload_operation(
                    &segments_guard,
                    operation_id,
                    payload_operation,
                    &hw_counter,
                )
            }
            CollectionUpdateOperations::FieldIndexOperation(index_operation) => {
                process_field_index_operation(
                    &segments_guard,
                    operation_id,
                    &index_operation,
                    &hw_counter,
                )
            }
            CollectionUpdateOperations::VectorNameOperation(ref vector_name_operation) => {
                let result = process_vector_name_operation(
                    &segments_guard,
                    operation_id,
                    vector_name_operation,
                );
                // Also update the edge shard config so queries can resolve the vector name
                if result.is_ok() {
                    self.apply_vector_name_to_config(vector_name_operation)?;
                }
                result
            }
            #[cfg(feature = "staging")]
            CollectionUpdateOperations::StagingOperation(staging_operation) => {
                crate::shard::update::process_staging_operation(
                    &segments_guard,
                    operation_id,
                    staging_operation,
                )
            }
        };

        result.map(|_| ())
    }

    /// Update the edge shard config to reflect a vector name create/delete operation.
    fn apply_vector_name_to_config(&self, operation: &VectorNameOperations) -> OperationResult<()> {
        match operation {
            VectorNameOperations::CreateVectorName(create) => {
                self.config
                    .write(|config| match &create.config {
                        VectorNameConfig::Dense(wrapper) => {
                            config.vectors.insert(
                                create.vector_name.clone(),
                                EdgeVectorParams {
                                    size: wrapper.dense.size,
                                    distance: wrapper.dense.distance,
                                    on_disk: None,
                                    multivector_config: wrapper.dense.multivector_config,
                                    datatype: wrapper.dense.datatype,
                                    quantization_config: None,
                                    hnsw_config: None,
                                },
                            );
                        }
                        VectorNameConfig::Sparse(wrapper) => {
                            config.sparse_vectors.insert(
                                create.vector_name.clone(),
                                EdgeSparseVectorParams {
                                    full_scan_threshold: None,
                                    on_disk: None,
                                    modifier: wrapper.sparse.modifier,
                                    datatype: wrapper.sparse.datatype,
                                },
                            );
                        }
                    })
                    .map_err(service_error)?;
            }
            VectorNameOperations::DeleteVectorName(delete) => {
                self.config
                    .write(|config| {
                        config.vectors.remove(&delete.vector_name);
                        config.sparse_vectors.remove(&delete.vector_name);
                    })
                    .map_err(service_error)?;
            }
        }
        Ok(())
    }
}

fn service_error(err: impl fmt::Display) -> OperationError {
    OperationError::service_error(err.to_string())
}
