//! The store contract: what every implementation of the repository ports must do, one module
//! of cases per port (`agents_contract`, `tasks_contract`, ...), run together by
//! [`store_contract!`](crate::store_contract); this module holds the macro, what the cases share,
//! and the store's own health.
//!
//! Each case is a function taking a fresh, empty store. An adapter runs the whole suite with:
//!
//! ```ignore
//! async fn fresh() -> testkit::StoreUnderTest { /* an empty store */ }
//! testkit::store_contract!(fresh);
//! ```

use crate::StoreUnderTest;

/// Runs every contract case against stores made by `$make`, an async fn returning a fresh
/// [`StoreUnderTest`].
#[macro_export]
macro_rules! store_contract {
    ($make:path) => {
        $crate::store_contract!(@in agents_contract, $make;
            insert_then_get_round_trips,
            get_of_an_unknown_agent_is_not_found,
            inserting_the_same_agent_twice_is_a_conflict,
            update_bumps_the_version_and_stores_its_events,
            a_stale_update_is_a_conflict_and_writes_nothing,
            update_of_a_missing_agent_is_not_found,
            list_filters_orders_newest_first_and_pages,
            delete_removes_the_agent_and_revokes_its_keys,
            heartbeat_before_finds_only_silent_online_agents,
            recorded_heartbeats_move_only_the_time_forward,
            count_by_status_counts_every_status,
            api_keys_are_found_by_hash_only,
            capable_exists_looks_at_every_registered_agent
        );
        $crate::store_contract!(@in events_contract, $make;
            the_log_keeps_one_identity,
            events_are_numbered_and_read_back_in_order,
            writes_number_events_consecutively_in_write_order_and_hand_each_over_once,
            racing_relays_are_handed_every_event_once_without_gaps,
            pruning_bounds_the_log_by_age_and_count_and_keeps_the_newest,
            task_events_are_a_tasks_numbered_events_oldest_first
        );
        $crate::store_contract!(@two events_contract, $make; two_stores_keep_different_logs);
        $crate::store_contract!(@in contract, $make;
            a_reachable_store_reports_itself_up,
            replicas_see_the_settings_other_live_replicas_announced
        );
        $crate::store_contract!(@in tasks_contract, $make;
            tasks_round_trip_with_every_field,
            task_lists_filter_and_page_newest_first,
            task_lists_page_through_tasks_made_together_and_follow_writes,
            save_writes_tasks_and_agents_together_or_not_at_all,
            a_scheduling_pass_sees_ready_work_and_serving_agents_and_writes_its_decision,
            passes_racing_on_one_store_never_place_a_task_twice,
            lease_deadline_and_holder_queries_find_the_right_tasks,
            holders_are_listed_by_assignment_time_and_every_status_is_counted,
            idempotency_keys_are_recorded_with_the_task_and_expire,
            submissions_are_stored_together_or_not_at_all,
            an_update_with_agents_sees_them_and_the_named_tasks_and_writes_only_their_own,
            the_scheduling_batch_follows_effective_priority_and_skips_late_tasks,
            the_batch_order_is_the_domains_queue_order_with_every_tie_break,
            a_fitted_pass_reads_as_many_pending_tasks_as_the_free_slots_call_for,
            with_no_free_slot_a_pass_reads_the_head_of_the_queue_as_it_is_kept,
            a_pass_reads_past_a_head_no_agent_with_a_free_slot_can_take,
            waiting_tasks_are_found_by_why_they_wait_oldest_first,
            a_write_allocating_from_a_pool_gone_or_moved_writes_nothing,
            a_pass_sees_the_pools_and_their_holders_and_writes_only_what_it_read,
            a_pass_with_no_claims_to_place_sees_no_pools,
            queue_depth_counts_pending_tasks_by_priority,
            an_agents_ended_tasks_are_counted_by_outcome_and_timed_within_the_span,
            tasks_that_ended_long_enough_ago_are_purged_oldest_first_and_no_others
        );
        $crate::store_contract!(@in resources_contract, $make;
            pools_round_trip_and_names_and_ids_are_unique,
            pools_are_found_by_id_or_name_and_listed_newest_first,
            pool_updates_and_deletes_hold_to_the_version_read,
            claim_holders_are_the_assigned_and_running_tasks_that_claim
        );
        $crate::store_contract!(@in conflicts_contract, $make;
            conflicts_round_trip_and_one_cause_has_one_open_conflict,
            conflict_updates_hold_to_the_version_read,
            conflict_lists_filter_and_page_newest_first,
            open_detected_conflicts_are_found_by_type_oldest_first
        );
        $crate::store_contract!(@in credentials_contract, $make;
            api_keys_are_unique_listed_newest_first_and_revoked_once,
            the_first_admin_key_is_stored_only_while_no_admin_exists,
            users_are_unique_by_name_found_listed_and_deleted,
            a_user_change_moves_the_token_version_and_a_missing_user_is_not_found,
            the_audit_trail_is_read_newest_first_by_action_and_pruned_by_age,
            racing_writers_store_one_first_admin_and_every_user_change
        );
        $crate::store_contract!(@in workflows_contract, $make;
            workflows_round_trip_and_are_listed_newest_first,
            executions_start_with_their_first_tasks_or_not_at_all,
            a_write_ending_a_steps_task_queues_the_steps_it_unblocks,
            a_failed_step_fails_its_execution_and_cancels_queued_steps_in_the_same_write,
            a_write_carrying_an_execution_is_written_as_it_decided,
            an_agents_report_moves_the_execution_and_a_requeued_step_of_a_failed_one_is_cancelled,
            a_running_executions_tasks_outlive_their_retention
        );
    };
    // Cases about what tells two stores apart get two fresh ones.
    (@two $module:ident, $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                $crate::$module::$case($make().await, $make().await).await;
            }
        )*
    };
    (@in $module:ident, $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                $crate::$module::$case($make().await).await;
            }
        )*
    };
}

/// Takes everything the store has to hand over, then hands back its log for reading.
pub(crate) async fn numbered(store: &StoreUnderTest) -> &dyn ports::EventLog {
    while !store.events.sequence(1000).await.unwrap().is_empty() {}
    store.events.as_ref()
}

pub async fn a_reachable_store_reports_itself_up(store: StoreUnderTest) {
    let status = store.health.status().await;
    assert!(
        matches!(
            status,
            ports::ComponentStatus::Healthy | ports::ComponentStatus::Embedded
        ),
        "{status:?}"
    );
}

pub async fn replicas_see_the_settings_other_live_replicas_announced(store: StoreUnderTest) {
    let at = |secs: i64| chrono::DateTime::from_timestamp(1_767_225_600 + secs, 0).unwrap();
    let replica = |n: u128, secret: &str, secs: i64| ports::ReplicaSettings {
        replica: uuid::Uuid::from_u128(n),
        settings: [("JWT_SECRET".to_owned(), secret.to_owned())].into(),
        seen_at: at(secs),
    };
    let (one, two) = (replica(1, "aaaa", 0), replica(2, "bbbb", 5));
    let others = store
        .replicas
        .announce(&one, at(-30), at(-3600))
        .await
        .unwrap();
    assert!(
        others.is_empty(),
        "the first replica sees only itself: {others:?}"
    );
    let others = store
        .replicas
        .announce(&two, at(-25), at(-3600))
        .await
        .unwrap();
    assert_eq!(others, [one], "the second sees the first, as announced");
    // A replica's new announcement replaces its old one.
    let again = replica(1, "cccc", 20);
    let others = store
        .replicas
        .announce(&again, at(-10), at(-3600))
        .await
        .unwrap();
    assert_eq!(others, std::slice::from_ref(&two));
    let others = store
        .replicas
        .announce(&two, at(-10), at(-3600))
        .await
        .unwrap();
    assert_eq!(others, std::slice::from_ref(&again));
    // Announcements older than `since` are not live; older than `forget_before`, gone.
    let three = replica(3, "aaaa", 100);
    let others = store
        .replicas
        .announce(&three, at(10), at(-3600))
        .await
        .unwrap();
    assert_eq!(
        others,
        std::slice::from_ref(&again),
        "the second's last word, at 5 s, is not live at 10 s"
    );
    let others = store
        .replicas
        .announce(&three, at(-3600), at(15))
        .await
        .unwrap();
    assert_eq!(others, [again], "the second was forgotten");
}
