-- Clips: a video is one entry of a scene's frame list. Its bytes are the original file (in
-- GridFS, like a still's); the row says which stretch of it plays (start and end, ms into the
-- video) and at what rate (frames per second the show takes from it). `duration_ms` is what
-- the stretch lasts in the show, kept equal to floor(frames * 1000 / fps).
alter table frame drop constraint frame_content_type_check;
alter table frame add constraint frame_content_type_check check (content_type in
    ('image/png', 'image/jpeg', 'image/gif', 'image/webp',
     'video/mp4', 'video/quicktime', 'video/webm', 'video/x-matroska'));

alter table frame
    add column clip_start_ms     integer check (clip_start_ms >= 0),
    add column clip_end_ms       integer,
    add column clip_fps          integer check (clip_fps between 1 and 60),
    -- what the file is (from the probe): its length, frame rate (none when variable or not
    -- said), codec and rotation
    add column video_duration_ms integer check (video_duration_ms > 0),
    add column video_fps         double precision,
    add column video_codec       text check (char_length(video_codec) <= 32),
    add column video_start_s     double precision,
    -- a small PNG of the clip's first frame shown, for people
    add column poster            bytea check (octet_length(poster) <= 1048576),
    add constraint frame_clip_whole check (
        (content_type like 'video/%') = (clip_start_ms is not null and clip_end_ms is not null
            and clip_fps is not null and video_duration_ms is not null and video_start_s is not null)),
    add constraint frame_clip_range check (
        clip_end_ms is null or (clip_end_ms > clip_start_ms and clip_end_ms <= video_duration_ms));
